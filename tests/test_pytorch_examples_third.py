"""A third set of PyTorch's tutorials and examples, in their usual shape, run unchanged by torch
and by minidl (``tt`` is either module) from the same initial weights, in float64: FGSM
adversarial examples, DQN with a replay memory, the char-RNN name classifier and name
generator, neural style transfer with LBFGS, pruning, parametrizations, model ensembling with
``func``, jacobians and hessians, custom autograd Functions, EmbeddingBag text classification,
the chatbot (packed GRU encoder, Luong attention, masked NLL), "What is torch.nn really",
knowledge distillation, forward-mode AD, neural tangent kernels, a convolutional autoencoder,
a siamese network with CosineEmbeddingLoss, and the optimizer/scheduler/checkpoint tutorial.

minidl's random generator is its own (not torch's Mersenne Twister), so every draw the two runs
must share (data, noise, exploration) comes from numpy; where a program samples with a seeded
``tt.Generator`` the run checks that the same seed gives the same sample in each framework.
``Tensor.data`` is minidl's ndarray by design, so the tutorials' ``p.data.add_(...)`` and
``x.grad.data`` lines are written ``with torch.no_grad(): p.add_(...)`` and ``x.grad``.
What the programs found missing in minidl is fixed, each fix with its own test at the end."""
import collections
import importlib
import io
import math
import random
import string
import unicodedata

import numpy as np
import pytest

import minidl

try:
    import torch
except ImportError:
    torch = None


from _program_parity import _load, _np, _params, _parity  # noqa: E402


# ---- 1. FGSM: input gradients, sign, clamp, denormalise, re-normalise ----------------------
def fgsm(tt, state=None, steps=3, p_drop=0.0):  # dropout draws differ: off for parity
    nn, F, optim = tt.nn, tt.nn.functional, tt.optim

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 4, 3)
            self.conv2 = nn.Conv2d(4, 8, 3)
            self.dropout = nn.Dropout(p_drop)
            self.fc1 = nn.Linear(8 * 2 * 2, 16)
            self.fc2 = nn.Linear(16, 10)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv1(x)), 2)
            x = F.max_pool2d(F.relu(self.conv2(x)), 2)
            x = tt.flatten(x, 1)
            x = self.dropout(F.relu(self.fc1(x)))
            return F.log_softmax(self.fc2(x), dim=1)

    def fgsm_attack(image, epsilon, data_grad):
        sign_data_grad = data_grad.sign()
        perturbed_image = image + epsilon * sign_data_grad
        return tt.clamp(perturbed_image, 0, 1)

    def denorm(batch, mean=[0.1307], std=[0.3081]):
        if isinstance(mean, list):
            mean = tt.tensor(mean, dtype=batch.dtype)
        if isinstance(std, list):
            std = tt.tensor(std, dtype=batch.dtype)
        return batch * std.view(1, -1, 1, 1) + mean.view(1, -1, 1, 1)

    def normalize(batch):
        return (batch - 0.1307) / 0.3081

    rng = np.random.default_rng(11)
    images = rng.random((24, 1, 14, 14))
    labels = rng.integers(0, 10, 24)
    model = Net().double()
    _load(model, tt, state)
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    model.train()
    for i in range(steps):  # a little pretraining, so the attack has something to undo
        x = normalize(tt.from_numpy(images[8 * i:8 * i + 8]))
        y = tt.from_numpy(labels[8 * i:8 * i + 8])
        optimizer.zero_grad()
        loss = F.nll_loss(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    accs, adv = [], []
    for epsilon in [0, .05, .1, .3]:
        correct = 0
        for k in range(len(images)):
            data = normalize(tt.from_numpy(images[k:k + 1]))
            target = tt.tensor([int(labels[k])])
            data.requires_grad = True
            output = model(data)
            init_pred = output.max(1, keepdim=True)[1]
            if init_pred.item() != target.item():
                continue
            loss = F.nll_loss(output, target)
            model.zero_grad()
            loss.backward()
            data_grad = data.grad  # the tutorial reads data.grad.data
            data_denorm = denorm(data)
            perturbed_data = fgsm_attack(data_denorm, epsilon, data_grad)
            perturbed_data_normalized = normalize(perturbed_data)
            output = model(perturbed_data_normalized)
            final_pred = output.max(1, keepdim=True)[1]
            if final_pred.item() == target.item():
                correct += 1
            elif len(adv) < 5:
                adv_ex = perturbed_data.squeeze().detach().cpu().numpy()
                adv.append(adv_ex)
        accs.append(correct / float(len(images)))
    return {"losses": losses, "accs": accs, "adv": np.array(adv).reshape(-1),
            "params": _params(model)}


def test_fgsm_tutorial_runs_the_same():
    out = _parity(fgsm)
    assert out["accs"][0] >= out["accs"][-1]


def test_fgsm_tutorial_runs_in_minidl():
    out = fgsm(minidl, steps=2, p_drop=0.25)
    assert len(out["accs"]) == 4 and all(0 <= a <= 1 for a in out["accs"])
    assert ((out["adv"] >= 0) & (out["adv"] <= 1)).all()


# ---- 2. DQN: replay memory, gather, smooth_l1, clip_grad_value_, soft target update --------
def dqn(tt, state=None, steps=12):
    nn, optim = tt.nn, tt.optim
    F = tt.nn.functional
    Transition = collections.namedtuple('Transition', ('state', 'action', 'next_state', 'reward'))

    class ReplayMemory(object):
        def __init__(self, capacity, seed):
            self.memory = collections.deque([], maxlen=capacity)
            self.random = random.Random(seed)

        def push(self, *args):
            self.memory.append(Transition(*args))

        def sample(self, batch_size):
            return self.random.sample(self.memory, batch_size)

        def __len__(self):
            return len(self.memory)

    class DQN(nn.Module):
        def __init__(self, n_observations, n_actions):
            super(DQN, self).__init__()
            self.layer1 = nn.Linear(n_observations, 16)
            self.layer2 = nn.Linear(16, 16)
            self.layer3 = nn.Linear(16, n_actions)

        def forward(self, x):
            x = F.relu(self.layer1(x))
            x = F.relu(self.layer2(x))
            return self.layer3(x)

    class ToyEnv:  # a pole that falls unless pushed back: 4 numbers of state, 2 actions
        def __init__(self, seed):
            self.rng = np.random.default_rng(seed)

        def reset(self):
            self.s = self.rng.uniform(-0.05, 0.05, 4)
            self.t = 0
            return self.s.copy(), {}

        def step(self, action):
            x, v, th, w = self.s
            force = 1.0 if action == 1 else -1.0
            w = w + 0.05 * (9.8 * math.sin(th) - force * math.cos(th))
            th = th + 0.05 * w
            v = v + 0.05 * force
            x = x + 0.05 * v
            self.s = np.array([x, v, th, w])
            self.t += 1
            terminated = abs(th) > 0.2 or abs(x) > 2.4
            return self.s.copy(), 1.0, terminated, self.t >= 15, {}

    BATCH_SIZE, GAMMA, EPS_START, EPS_END, EPS_DECAY, TAU, LR = 8, 0.99, 0.9, 0.05, 20, 0.005, 1e-3
    device = tt.device("cpu")
    env = ToyEnv(12)
    n_actions, n_observations = 2, 4
    policy_net = DQN(n_observations, n_actions).to(device).double()
    target_net = DQN(n_observations, n_actions).to(device).double()
    _load(policy_net, tt, state, "policy.")
    target_net.load_state_dict(policy_net.state_dict())
    optimizer = optim.AdamW(policy_net.parameters(), lr=LR, amsgrad=True)
    memory = ReplayMemory(100, seed=3)
    explore = random.Random(5)
    steps_done = 0

    def select_action(state):
        nonlocal steps_done
        sample = explore.random()
        eps_threshold = EPS_END + (EPS_START - EPS_END) * math.exp(-1. * steps_done / EPS_DECAY)
        steps_done += 1
        if sample > eps_threshold:
            with tt.no_grad():
                return policy_net(state).max(1).indices.view(1, 1)
        return tt.tensor([[explore.randrange(n_actions)]], device=device, dtype=tt.long)

    losses = []

    def optimize_model():
        if len(memory) < BATCH_SIZE:
            return
        transitions = memory.sample(BATCH_SIZE)
        batch = Transition(*zip(*transitions))
        non_final_mask = tt.tensor(tuple(map(lambda s: s is not None, batch.next_state)),
                                   device=device, dtype=tt.bool)
        non_final_next_states = tt.cat([s for s in batch.next_state if s is not None])
        state_batch = tt.cat(batch.state)
        action_batch = tt.cat(batch.action)
        reward_batch = tt.cat(batch.reward)
        state_action_values = policy_net(state_batch).gather(1, action_batch)
        next_state_values = tt.zeros(BATCH_SIZE, device=device, dtype=tt.float64)
        with tt.no_grad():
            next_state_values[non_final_mask] = target_net(non_final_next_states).max(1).values
        expected_state_action_values = (next_state_values * GAMMA) + reward_batch
        criterion = nn.SmoothL1Loss()
        loss = criterion(state_action_values, expected_state_action_values.unsqueeze(1))
        optimizer.zero_grad()
        loss.backward()
        tt.nn.utils.clip_grad_value_(policy_net.parameters(), 100)
        optimizer.step()
        losses.append(loss.item())

    durations = []
    num_episodes = 3 if steps else 0
    for i_episode in range(num_episodes):
        obs, info = env.reset()
        obs = tt.tensor(obs, dtype=tt.float64, device=device).unsqueeze(0)
        for t in range(steps):
            action = select_action(obs)
            observation, reward, terminated, truncated, _ = env.step(action.item())
            reward = tt.tensor([reward], device=device, dtype=tt.float64)
            done = terminated or truncated
            if terminated:
                next_state = None
            else:
                next_state = tt.tensor(observation, dtype=tt.float64, device=device).unsqueeze(0)
            memory.push(obs, action, next_state, reward)
            obs = next_state
            optimize_model()
            target_net_state_dict = target_net.state_dict()
            policy_net_state_dict = policy_net.state_dict()
            for key in policy_net_state_dict:
                target_net_state_dict[key] = (policy_net_state_dict[key] * TAU
                                              + target_net_state_dict[key] * (1 - TAU))
            target_net.load_state_dict(target_net_state_dict)
            if done:
                durations.append(t + 1)
                break
    return {"losses": losses, "durations": durations,
            "params": {**_params(policy_net, "policy."), **_params(target_net, "target.")}}


def test_dqn_tutorial_trains_the_same():
    _parity(dqn)


def test_dqn_tutorial_runs_in_minidl():
    out = dqn(minidl, steps=10)
    assert len(out["losses"]) > 0 and np.isfinite(out["losses"]).all()
    p = out["params"]
    assert not np.allclose(p["policy.layer1.weight"], p["target.layer1.weight"])


# ---- 3. char-RNN name classification: one-hot letters, nn.RNN, NLLLoss, clip_grad_norm_ ------
_NAMES = {
    "English": ["Abbott", "Baker", "Clarke", "Dawson", "Ellis", "Fletcher"],
    "French": ["Abel", "Beaumont", "Chastain", "Dubois", "Éluard", "Favre"],
    "Italian": ["Abate", "Bianchi", "Colombo", "D'Angelo", "Esposito", "Ferrari"],
    "Polish": ["Adamczak", "Bartosz", "Czajkowski", "Dąbrowski", "Ńowak", "Ferenc"],
}


def name_classification(tt, state=None, steps=3):
    nn = tt.nn
    allowed_characters = string.ascii_letters + " .,;'" + "_"
    n_letters = len(allowed_characters)

    def unicodeToAscii(s):
        return ''.join(c for c in unicodedata.normalize('NFD', s)
                       if unicodedata.category(c) != 'Mn' and c in allowed_characters)

    def letterToIndex(letter):
        if letter not in allowed_characters:
            return allowed_characters.find("_")
        return allowed_characters.find(letter)

    def lineToTensor(line):
        tensor = tt.zeros(len(line), 1, n_letters, dtype=tt.float64)
        for li, letter in enumerate(line):
            tensor[li][0][letterToIndex(letter)] = 1
        return tensor

    class NamesDataset(tt.utils.data.Dataset):
        def __init__(self, names):
            self.labels_uniq = sorted(names)
            self.data, self.data_tensors, self.labels, self.labels_tensors = [], [], [], []
            for label in self.labels_uniq:
                for name in names[label]:
                    self.data.append(name)
                    self.data_tensors.append(lineToTensor(unicodeToAscii(name)))
                    self.labels.append(label)
            for idx in range(len(self.labels)):
                temp_tensor = tt.tensor([self.labels_uniq.index(self.labels[idx])], dtype=tt.long)
                self.labels_tensors.append(temp_tensor)

        def __len__(self):
            return len(self.data)

        def __getitem__(self, idx):
            return (self.labels_tensors[idx], self.data_tensors[idx], self.labels[idx],
                    self.data[idx])

    class CharRNN(nn.Module):
        def __init__(self, input_size, hidden_size, output_size):
            super(CharRNN, self).__init__()
            self.rnn = nn.RNN(input_size, hidden_size)
            self.h2o = nn.Linear(hidden_size, output_size)
            self.softmax = nn.LogSoftmax(dim=1)

        def forward(self, line_tensor):
            rnn_out, hidden = self.rnn(line_tensor)
            output = self.h2o(hidden[0])
            return self.softmax(output)

    def label_from_output(output, output_labels):
        top_n, top_i = output.topk(1)
        label_i = top_i[0].item()
        return output_labels[label_i], label_i

    alldata = NamesDataset(_NAMES)
    rnn = CharRNN(n_letters, 12, len(alldata.labels_uniq)).double()
    _load(rnn, tt, state)
    order = np.random.default_rng(13).permutation(len(alldata))
    train_idx, test_idx = order[:18], order[18:]
    criterion = nn.NLLLoss()
    optimizer = tt.optim.SGD(rnn.parameters(), lr=0.15)
    losses = []
    rnn.train()
    batch_size = 6
    for epoch in range(steps):
        rnn.zero_grad()
        batches = np.array_split(train_idx, len(train_idx) // batch_size)
        current_loss = 0
        for idx, batch in enumerate(batches):
            batch_loss = 0
            for i in batch:
                (label_tensor, text_tensor, label, text) = alldata[int(i)]
                output = rnn.forward(text_tensor)
                loss = criterion(output, label_tensor)
                batch_loss += loss
            batch_loss.backward()
            nn.utils.clip_grad_norm_(rnn.parameters(), 3)
            optimizer.step()
            optimizer.zero_grad()
            current_loss += batch_loss.item() / len(batch)
        losses.append(current_loss / len(batches))
    confusion = tt.zeros(len(alldata.labels_uniq), len(alldata.labels_uniq), dtype=tt.float64)
    rnn.eval()
    guesses = []
    with tt.no_grad():
        for i in test_idx:
            (label_tensor, text_tensor, label, text) = alldata[int(i)]
            output = rnn(text_tensor)
            guess, guess_i = label_from_output(output, alldata.labels_uniq)
            label_i = alldata.labels_uniq.index(label)
            confusion[label_i][guess_i] += 1
            guesses.append(guess)
    for i in range(len(alldata.labels_uniq)):
        denom = confusion[i].sum()
        if denom > 0:
            confusion[i] = confusion[i] / denom
    return {"losses": losses, "confusion": confusion.numpy(), "guesses": repr(guesses),
            "ascii": unicodeToAscii("Ślusàrski"), "params": _params(rnn)}


def test_name_classification_tutorial_trains_the_same():
    _parity(name_classification)


def test_name_classification_tutorial_runs_in_minidl():
    out = name_classification(minidl, steps=4)
    assert out["ascii"] == "Slusarski" and out["losses"][-1] < out["losses"][0]


# ---- 4. char-RNN name generation: category + letter input, dropout, sampling ----------------
def name_generation(tt, state=None, steps=6):
    nn = tt.nn
    all_letters = string.ascii_letters + " .,;'-"
    n_letters = len(all_letters) + 1  # plus EOS
    all_categories = sorted(_NAMES)
    n_categories = len(all_categories)

    class RNN(nn.Module):
        def __init__(self, input_size, hidden_size, output_size):
            super(RNN, self).__init__()
            self.hidden_size = hidden_size
            self.i2h = nn.Linear(n_categories + input_size + hidden_size, hidden_size)
            self.i2o = nn.Linear(n_categories + input_size + hidden_size, output_size)
            self.o2o = nn.Linear(hidden_size + output_size, output_size)
            self.dropout = nn.Dropout(0.1)
            self.softmax = nn.LogSoftmax(dim=1)

        def forward(self, category, input, hidden):
            input_combined = tt.cat((category, input, hidden), 1)
            hidden = self.i2h(input_combined)
            output = self.i2o(input_combined)
            output_combined = tt.cat((hidden, output), 1)
            output = self.o2o(output_combined)
            output = self.dropout(output)
            output = self.softmax(output)
            return output, hidden

        def initHidden(self):
            return tt.zeros(1, self.hidden_size, dtype=tt.float64)

    def unicodeToAscii(s):
        return ''.join(c for c in unicodedata.normalize('NFD', s)
                       if unicodedata.category(c) != 'Mn' and c in all_letters)

    def categoryTensor(category):
        li = all_categories.index(category)
        tensor = tt.zeros(1, n_categories, dtype=tt.float64)
        tensor[0][li] = 1
        return tensor

    def inputTensor(line):
        tensor = tt.zeros(len(line), 1, n_letters, dtype=tt.float64)
        for li in range(len(line)):
            tensor[li][0][all_letters.find(line[li])] = 1
        return tensor

    def targetTensor(line):
        letter_indexes = [all_letters.find(line[li]) for li in range(1, len(line))]
        letter_indexes.append(n_letters - 1)  # EOS
        return tt.LongTensor(letter_indexes)

    rnn = RNN(n_letters, 16, n_letters).double()
    _load(rnn, tt, state)
    criterion = nn.NLLLoss()
    learning_rate = 0.05
    pick = np.random.default_rng(14)

    def train(category_tensor, input_line_tensor, target_line_tensor):
        target_line_tensor.unsqueeze_(-1)
        hidden = rnn.initHidden()
        rnn.zero_grad()
        loss = tt.Tensor([0]).double()
        for i in range(input_line_tensor.size(0)):
            output, hidden = rnn(category_tensor, input_line_tensor[i], hidden)
            l = criterion(output, target_line_tensor[i])  # noqa: E741 (the tutorial's name)
            loss += l
        loss.backward()
        with tt.no_grad():  # the tutorial: p.data.add_(p.grad.data, alpha=-learning_rate)
            for p in rnn.parameters():
                p.add_(p.grad, alpha=-learning_rate)
        return output, loss.item() / input_line_tensor.size(0)

    rnn.train()
    rnn.dropout.p = 0.0  # dropout draws differ between the frameworks
    losses = []
    for it in range(steps):
        category = all_categories[pick.integers(n_categories)]
        line = unicodeToAscii(_NAMES[category][pick.integers(6)])
        output, loss = train(categoryTensor(category), inputTensor(line), targetTensor(line))
        losses.append(loss)
    rnn.eval()
    max_length = 8

    def sample(category, start_letter='A', generator=None, u=None):
        with tt.no_grad():
            category_tensor = categoryTensor(category)
            input = inputTensor(start_letter)
            hidden = rnn.initHidden()
            output_name = start_letter
            for i in range(max_length):
                output, hidden = rnn(category_tensor, input[0], hidden)
                if generator is not None:
                    topi = tt.multinomial(output.exp(), 1, generator=generator)[0]
                elif u is not None:  # inverse-CDF with a shared uniform draw
                    cdf = output.exp().cumsum(1)
                    topi = (cdf < u[i] * cdf[0, -1]).sum(1)
                else:
                    topv, topi = output.topk(1)
                topi = topi[0].item()
                if topi == n_letters - 1:
                    break
                output_name += all_letters[topi]
                input = inputTensor(all_letters[topi])
            return output_name

    greedy = [sample(c, s) for c, s in zip(all_categories, "ABCD")]
    u = np.random.default_rng(15).random(max_length)
    drawn = [sample(c, 'E', u=u) for c in all_categories]
    seeded = [sample(c, 'F', generator=tt.Generator().manual_seed(7)) for c in all_categories]
    again = [sample(c, 'F', generator=tt.Generator().manual_seed(7)) for c in all_categories]
    assert seeded == again and all(s.startswith('F') for s in seeded)
    return {"losses": losses, "names": repr(greedy + drawn), "params": _params(rnn)}


def test_name_generation_tutorial_trains_the_same():
    _parity(name_generation)


def test_name_generation_tutorial_runs_in_minidl():
    out = name_generation(minidl, steps=4)
    assert np.isfinite(out["losses"]).all() and "'A" in out["names"]


# ---- 5. neural style transfer: LBFGS on the image, Gram matrices, loss modules --------------
def style_transfer(tt, state=None, steps=3):
    nn, F, optim = tt.nn, tt.nn.functional, tt.optim
    rng = np.random.default_rng(16)
    style_img = tt.from_numpy(rng.random((1, 3, 16, 16)))
    content_img = tt.from_numpy(rng.random((1, 3, 16, 16)))

    class ContentLoss(nn.Module):
        def __init__(self, target):
            super(ContentLoss, self).__init__()
            self.target = target.detach()

        def forward(self, input):
            self.loss = F.mse_loss(input, self.target)
            return input

    def gram_matrix(input):
        a, b, c, d = input.size()
        features = input.view(a * b, c * d)
        G = tt.mm(features, features.t())
        return G.div(a * b * c * d)

    class StyleLoss(nn.Module):
        def __init__(self, target_feature):
            super(StyleLoss, self).__init__()
            self.target = gram_matrix(target_feature).detach()

        def forward(self, input):
            G = gram_matrix(input)
            self.loss = F.mse_loss(G, self.target)
            return input

    class Normalization(nn.Module):
        def __init__(self, mean, std):
            super(Normalization, self).__init__()
            self.mean = mean.clone().detach().view(-1, 1, 1)
            self.std = std.clone().detach().view(-1, 1, 1)

        def forward(self, img):
            return (img - self.mean) / self.std

    cnn = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1),
                        nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(8, 8, 3, padding=1)).double().eval()
    _load(cnn, tt, state)
    cnn_normalization_mean = tt.tensor([0.485, 0.456, 0.406], dtype=tt.float64)
    cnn_normalization_std = tt.tensor([0.229, 0.224, 0.225], dtype=tt.float64)
    content_layers_default = ['conv_4']
    style_layers_default = ['conv_1', 'conv_2', 'conv_3', 'conv_4']

    def get_style_model_and_losses(cnn, normalization_mean, normalization_std, style_img,
                                   content_img, content_layers=content_layers_default,
                                   style_layers=style_layers_default):
        normalization = Normalization(normalization_mean, normalization_std)
        content_losses, style_losses = [], []
        model = nn.Sequential(normalization)
        i = 0
        for layer in cnn.children():
            if isinstance(layer, nn.Conv2d):
                i += 1
                name = 'conv_{}'.format(i)
            elif isinstance(layer, nn.ReLU):
                name = 'relu_{}'.format(i)
                layer = nn.ReLU(inplace=False)
            elif isinstance(layer, nn.MaxPool2d):
                name = 'pool_{}'.format(i)
            else:
                raise RuntimeError('Unrecognized layer: {}'.format(layer.__class__.__name__))
            model.add_module(name, layer)
            if name in content_layers:
                target = model(content_img).detach()
                content_loss = ContentLoss(target)
                model.add_module("content_loss_{}".format(i), content_loss)
                content_losses.append(content_loss)
            if name in style_layers:
                target_feature = model(style_img).detach()
                style_loss = StyleLoss(target_feature)
                model.add_module("style_loss_{}".format(i), style_loss)
                style_losses.append(style_loss)
        for i in range(len(model) - 1, -1, -1):
            if isinstance(model[i], ContentLoss) or isinstance(model[i], StyleLoss):
                break
        model = model[:(i + 1)]
        return model, style_losses, content_losses

    def get_input_optimizer(input_img):
        return optim.LBFGS([input_img])

    def run_style_transfer(cnn, normalization_mean, normalization_std, content_img, style_img,
                           input_img, num_steps=300, style_weight=1000000, content_weight=1):
        model, style_losses, content_losses = get_style_model_and_losses(
            cnn, normalization_mean, normalization_std, style_img, content_img)
        input_img.requires_grad_(True)
        model.eval()
        model.requires_grad_(False)
        optimizer = get_input_optimizer(input_img)
        run = [0]
        scores = []
        while run[0] <= num_steps:
            def closure():
                with tt.no_grad():
                    input_img.clamp_(0, 1)
                optimizer.zero_grad()
                model(input_img)
                style_score = 0
                content_score = 0
                for sl in style_losses:
                    style_score += sl.loss
                for cl in content_losses:
                    content_score += cl.loss
                style_score *= style_weight
                content_score *= content_weight
                loss = style_score + content_score
                loss.backward()
                run[0] += 1
                scores.append([style_score.item(), content_score.item()])
                return style_score + content_score
            optimizer.step(closure)
        with tt.no_grad():
            input_img.clamp_(0, 1)
        return input_img, scores, model

    input_img = content_img.clone()
    if steps:
        output, scores, model = run_style_transfer(cnn, cnn_normalization_mean,
                                                   cnn_normalization_std, content_img, style_img,
                                                   input_img, num_steps=steps, style_weight=1000)
        names = repr([n for n, _ in model.named_children()])
        output = _np(output)
    else:
        scores, names, output = [], "", np.zeros(1)
    return {"scores": np.array(scores).reshape(-1), "image": output, "names": names,
            "params": _params(cnn)}


def test_neural_style_transfer_runs_the_same():
    _parity(style_transfer, loss_rtol=1e-7, loss_atol=1e-10)


def test_neural_style_transfer_runs_in_minidl():
    out = style_transfer(minidl, steps=2)
    assert "style_loss_4" in out["names"] and "content_loss_4" in out["names"]
    assert ((out["image"] >= 0) & (out["image"] <= 1)).all()


# ---- 6. pruning: random/l1 unstructured, ln_structured, global, custom method, remove --------
def pruning(tt, state=None, steps=3):
    nn, F = tt.nn, tt.nn.functional
    prune = importlib.import_module(tt.__name__ + ".nn.utils.prune")  # import torch.nn.utils.prune

    class LeNet(nn.Module):
        def __init__(self):
            super(LeNet, self).__init__()
            self.conv1 = nn.Conv2d(1, 6, 3)
            self.conv2 = nn.Conv2d(6, 8, 3)
            self.fc1 = nn.Linear(8 * 2 * 2, 20)
            self.fc2 = nn.Linear(20, 14)
            self.fc3 = nn.Linear(14, 10)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv1(x)), (2, 2))
            x = F.max_pool2d(F.relu(self.conv2(x)), 2)
            x = x.view(-1, int(x.nelement() / x.shape[0]))
            x = F.relu(self.fc1(x))
            x = F.relu(self.fc2(x))
            return self.fc3(x)

    facts = []
    model = LeNet().double()
    _load(model, tt, state)
    params = _params(model)
    if not steps:
        return {"params": params}
    # random pruning draws its mask: on a copy whose values are not compared, only its counts
    spare = LeNet().double()
    module = spare.conv1
    facts.append([n for n, _ in module.named_parameters()])
    prune.random_unstructured(module, name="weight", amount=0.3)
    facts.append([n for n, _ in module.named_parameters()])
    facts.append([n for n, _ in module.named_buffers()])
    facts.append(int((module.weight == 0).sum()))
    facts.append(len(module._forward_pre_hooks))
    # deterministic pruning of the compared model
    module = model.conv1
    prune.l1_unstructured(module, name="bias", amount=3)
    facts.append(module.bias_mask.tolist())
    prune.ln_structured(module, name="weight", amount=0.5, n=2, dim=0)
    facts.append(module.weight_mask.sum(dim=(1, 2, 3)).tolist())
    prune.ln_structured(module, name="weight", amount=0.5, n=1, dim=1)  # iterative: a container
    for hook in module._forward_pre_hooks.values():
        if hook._tensor_name == "weight":
            break
    facts.append([type(h).__name__ for h in hook])
    facts.append(sorted(model.state_dict().keys()))
    prune.remove(module, 'weight')
    facts.append([n for n, _ in module.named_parameters()])
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            prune.l1_unstructured(module, name='weight', amount=0.2)
        elif isinstance(module, nn.Linear):
            prune.l1_unstructured(module, name='weight', amount=0.4)
    facts.append(sorted(dict(model.named_buffers()).keys()))
    model = LeNet().double()
    _load(model, tt, {k: v for k, v in params.items()})
    parameters_to_prune = ((model.conv1, 'weight'), (model.conv2, 'weight'), (model.fc1, 'weight'),
                           (model.fc2, 'weight'), (model.fc3, 'weight'))
    prune.global_unstructured(parameters_to_prune, pruning_method=prune.L1Unstructured,
                              amount=0.2)
    sparsity = [float(tt.sum(m.weight == 0)) / float(m.weight.nelement())
                for m, _ in parameters_to_prune]
    sparsity.append(sum(float(tt.sum(m.weight == 0)) for m, _ in parameters_to_prune)
                    / sum(m.weight.nelement() for m, _ in parameters_to_prune))

    class FooBarPruningMethod(prune.BasePruningMethod):
        """Prune every other entry in a tensor"""
        PRUNING_TYPE = 'unstructured'

        def compute_mask(self, t, default_mask):
            mask = default_mask.clone()
            mask.view(-1)[::2] = 0
            return mask

    def foobar_unstructured(module, name):
        FooBarPruningMethod.apply(module, name)
        return module

    foobar_unstructured(model.fc3, name='bias')
    facts.append(model.fc3.bias_mask.tolist())
    # train the pruned model: gradients reach weight_orig through the mask
    rng = np.random.default_rng(17)
    optimizer = tt.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for _ in range(steps):
        x = tt.from_numpy(rng.standard_normal((4, 1, 14, 14)))
        y = tt.from_numpy(rng.integers(0, 10, 4))
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    facts.append(float((model.fc1.weight_orig.grad * (1 - model.fc1.weight_mask)).abs().sum()))
    for m, name in parameters_to_prune:
        prune.remove(m, name)
    prune.remove(model.fc3, 'bias')
    return {"losses": losses, "sparsity": sparsity, "facts": repr(facts),
            "params": _params(model)}


def test_pruning_tutorial_runs_the_same():
    out = _parity(pruning)
    assert abs(out["sparsity"][-1] - 0.2) < 1e-3  # global: 20% of all five weights together


def test_pruning_tutorial_runs_in_minidl():
    out = pruning(minidl, steps=1)
    assert "weight_orig" in out["facts"] and "PruningContainer" not in out["facts"]
    assert (out["params"]["fc3.bias"][::2] == 0).all()


# ---- 7. parametrizations: symmetric, skew + Cayley, matrix_exp, right_inverse, cached -------
def parametrizations(tt, state=None, steps=3):
    nn = tt.nn
    parametrize = tt.nn.utils.parametrize

    class Symmetric(nn.Module):
        def forward(self, X):
            return X.triu() + X.triu(1).transpose(-1, -2)

        def right_inverse(self, A):
            return A.triu()

    class Skew(nn.Module):
        def forward(self, X):
            A = X.triu(1)
            return A - A.transpose(-1, -2)

    class CayleyMap(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.register_buffer("Id", tt.eye(n, dtype=tt.float64))

        def forward(self, X):
            return tt.linalg.solve(self.Id - X, self.Id + X)

    class MatrixExponential(nn.Module):
        def forward(self, X):
            return tt.matrix_exp(X)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.sym = nn.Linear(4, 4)
            self.orth = nn.Linear(4, 4)
            self.expo = nn.Linear(4, 4)
            self.rnn = nn.RNN(4, 4)

        def forward(self, x):
            h = self.sym(x).tanh()
            h = self.orth(h)
            h = self.expo(h)
            out, _ = self.rnn(h.unsqueeze(1))
            return out.squeeze(1)

    model = Model().double()
    _load(model, tt, state)
    if not steps:
        return {"params": _params(model)}
    facts = []
    parametrize.register_parametrization(model.sym, "weight", Symmetric())
    A = model.sym.weight
    facts.append(bool(tt.allclose(A, A.T)))
    parametrize.register_parametrization(model.orth, "weight", Skew())
    parametrize.register_parametrization(model.orth, "weight", CayleyMap(4))
    X = model.orth.weight
    facts.append(bool(tt.allclose(X.T @ X, tt.eye(4, dtype=tt.float64))))
    parametrize.register_parametrization(model.expo, "weight", Skew())
    parametrize.register_parametrization(model.expo, "weight", MatrixExponential())
    tt.nn.utils.parametrizations.orthogonal(model.rnn, "weight_hh_l0")
    facts.append(parametrize.is_parametrized(model.sym))
    facts.append(type(model.orth.parametrizations.weight).__name__)
    facts.append(sorted(model.state_dict().keys()))
    facts.append(repr(model.sym).count("Symmetric"))
    rng = np.random.default_rng(18)
    optimizer = tt.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(steps):
        x = tt.from_numpy(rng.standard_normal((5, 4)))
        optimizer.zero_grad()
        with parametrize.cached():
            loss = model(x).pow(2).sum() + model.sym.weight.sum()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    W = model.rnn.weight_hh_l0
    facts.append(bool(tt.allclose(W @ W.T, tt.eye(4, dtype=tt.float64))))
    S = np.arange(16.).reshape(4, 4)
    model.sym.weight = tt.tensor(S + S.T, dtype=tt.float64)  # assigning goes by right_inverse
    original = _np(model.sym.parametrizations.weight.original)
    weights = {n: _np(getattr(model, n).weight) for n in ("sym", "orth", "expo")}
    weights["rnn"] = _np(model.rnn.weight_hh_l0)
    parametrize.remove_parametrizations(model.sym, "weight")
    parametrize.remove_parametrizations(model.orth, "weight", leave_parametrized=False)
    facts.append(parametrize.is_parametrized(model.sym))
    facts.append(type(model.sym.weight).__name__)
    params = _params(model)
    return {"losses": losses, "facts": repr(facts), "original": original,
            **{"w_" + k: v for k, v in weights.items()}, "params": params}


def test_parametrizations_tutorial_runs_the_same():
    _parity(parametrizations, loss_rtol=1e-8, loss_atol=1e-10)


def test_parametrizations_tutorial_runs_in_minidl():
    out = parametrizations(minidl, steps=2)
    assert out["facts"].startswith("[True, True, True, 'ParametrizationList'")
    np.testing.assert_allclose(out["w_rnn"] @ out["w_rnn"].T, np.eye(4), atol=1e-10)
    S = np.arange(16.).reshape(4, 4)
    np.testing.assert_array_equal(out["original"], np.triu(S + S.T))
    np.testing.assert_array_equal(out["w_sym"], S + S.T)


# ---- 8. model ensembling: stack_module_state, functional_call on a meta model, vmap ---------
def ensembling(tt, state=None, steps=3, meta=False):
    nn, F = tt.nn, tt.nn.functional
    from_func = importlib.import_module(tt.__name__ + ".func")
    stack_module_state, functional_call = from_func.stack_module_state, from_func.functional_call
    vmap, grad = from_func.vmap, from_func.grad

    class SimpleMLP(nn.Module):
        def __init__(self):
            super(SimpleMLP, self).__init__()
            self.fc1 = nn.Linear(36, 16)
            self.fc2 = nn.Linear(16, 16)
            self.fc3 = nn.Linear(16, 10)

        def forward(self, x):
            x = x.flatten(1)
            x = self.fc1(x)
            x = F.relu(x)
            x = self.fc2(x)
            x = F.relu(x)
            return self.fc3(x)

    num_models = 4
    models = [SimpleMLP().double() for _ in range(num_models)]
    for i, m in enumerate(models):
        _load(m, tt, state, f"m{i}.")
    if not steps:
        return {"params": {k: v for i, m in enumerate(models) for k, v in _params(m, f"m{i}.").items()}}
    rng = np.random.default_rng(19)
    minibatches = tt.from_numpy(rng.standard_normal((num_models, 8, 1, 6, 6)))
    minibatch = minibatches[0]
    predictions_diff_minibatch_loop = [model(mb) for model, mb in zip(models, minibatches)]
    predictions2 = [model(minibatch) for model in models]
    params, buffers = stack_module_state(models)
    import copy
    base_model = copy.deepcopy(models[0])
    if meta:  # the tutorial's line; minidl has no meta device (see the xfail below)
        base_model = base_model.to('meta')

    def fmodel(params, buffers, x):
        return functional_call(base_model, (params, buffers), (x,))

    predictions1_vmap = vmap(fmodel)(params, buffers, minibatches)
    assert tt.allclose(predictions1_vmap, tt.stack(predictions_diff_minibatch_loop), atol=1e-12)
    predictions2_vmap = vmap(fmodel, in_dims=(0, 0, None))(params, buffers, minibatch)
    assert tt.allclose(predictions2_vmap, tt.stack(predictions2), atol=1e-12)
    # train the whole ensemble at once: vmap over grad of a functional loss, SGD by hand
    targets = tt.from_numpy(rng.integers(0, 10, (num_models, 8)))

    def loss_fn(params, buffers, x, y):
        return F.cross_entropy(fmodel(params, buffers, x), y)

    losses = []
    params = {k: v.detach() for k, v in params.items()}
    for _ in range(steps):
        grads = vmap(grad(loss_fn), in_dims=(0, 0, 0, 0))(params, buffers, minibatches, targets)
        loss = vmap(loss_fn)(params, buffers, minibatches, targets)
        params = {k: params[k] - 0.5 * grads[k] for k in params}
        losses.append(loss.tolist())
    out = {f"m{i}.{k}": _np(v[i]) for k, v in params.items() for i in range(num_models)}
    return {"losses": losses, "pred": _np(predictions1_vmap), "params": out}


def test_model_ensembling_tutorial_runs_the_same():
    out = _parity(ensembling)
    assert np.all(np.array(out["losses"][-1]) < np.array(out["losses"][0]))


def test_model_ensembling_tutorial_runs_in_minidl():
    out = ensembling(minidl, steps=2)
    assert out["pred"].shape == (4, 8, 10) and np.shape(out["losses"]) == (2, 4)


def test_model_ensembling_tutorial_with_a_meta_base_model_runs_in_torch():
    if torch is None:
        pytest.skip("torch not installed")
    assert ensembling(torch, steps=1, meta=True)["pred"].shape == (4, 8, 10)


# minidl has no meta device (nn/utils.py says so for skip_init): a Module cannot be moved to one
@pytest.mark.xfail(strict=True, raises=ValueError, reason="minidl has no meta device")
def test_model_ensembling_tutorial_with_a_meta_base_model_runs_in_minidl():
    ensembling(minidl, steps=1, meta=True)


# ---- 9. jacobians, hessians, hvp and vmap: autograd.grad rows, vjp, jacrev, jacfwd ----------
def jacobians(tt, state=None, steps=1):
    F = tt.nn.functional
    from functools import partial
    from_func = importlib.import_module(tt.__name__ + ".func")
    vmap, vjp, jvp, jacrev, jacfwd, hessian, grad = (
        from_func.vmap, from_func.vjp, from_func.jvp, from_func.jacrev, from_func.jacfwd,
        from_func.hessian, from_func.grad)
    rng = np.random.default_rng(20)
    D = 6
    weight = tt.from_numpy(rng.standard_normal((D, D)))
    bias = tt.from_numpy(rng.standard_normal(D))
    x = tt.from_numpy(rng.standard_normal(D))
    if not steps:
        return {"params": {"weight": _np(weight)}}

    def predict(weight, bias, x):
        return F.linear(x, weight, bias).tanh()

    def compute_jac(xp):
        jacobian_rows = [tt.autograd.grad(predict(weight, bias, xp), xp, vec)[0]
                         for vec in unit_vectors]
        return tt.stack(jacobian_rows)

    xp = x.clone().requires_grad_()
    unit_vectors = tt.eye(D, dtype=tt.float64)
    jacobian = compute_jac(xp)
    _, vjp_fn = vjp(partial(predict, weight, bias), x)
    ft_jacobian, = vmap(vjp_fn)(unit_vectors)
    assert tt.allclose(ft_jacobian, jacobian)
    ft_jacobian = jacrev(predict, argnums=2)(weight, bias, x)
    assert tt.allclose(ft_jacobian, jacobian)
    ft_jac_weight, ft_jac_bias = jacrev(predict, argnums=(0, 1))(weight, bias, x)
    jacfwd_w = jacfwd(predict, argnums=0)(weight, bias, x)
    assert tt.allclose(ft_jac_weight, jacfwd_w)
    hess_api = hessian(predict, argnums=2)(weight, bias, x)
    hess_fwdrev = jacfwd(jacrev(predict, argnums=2), argnums=2)(weight, bias, x)
    assert tt.allclose(hess_api, hess_fwdrev)
    batch_size = 5
    xb = tt.from_numpy(rng.standard_normal((batch_size, D)))
    compute_batch_jacobian = vmap(jacrev(predict, argnums=2), in_dims=(None, None, 0))
    batch_jacobian0 = compute_batch_jacobian(weight, bias, xb)

    def predict_with_output_summed(weight, bias, x):
        return predict(weight, bias, x).sum(0)

    batch_jacobian1 = jacrev(predict_with_output_summed, argnums=2)(weight, bias, xb).movedim(1, 0)
    assert tt.allclose(batch_jacobian0, batch_jacobian1)
    compute_batch_hessian = vmap(hessian(predict, argnums=2), in_dims=(None, None, 0))
    batch_hess = compute_batch_hessian(weight, bias, xb)

    def hvp(f, primals, tangents):
        return jvp(grad(f), primals, tangents)[1]

    def f(x):
        return x.sin().sum()

    tangent = tt.from_numpy(rng.standard_normal(D))
    result = hvp(f, (x,), (tangent,))
    return {"jac": _np(jacobian), "jac_w": _np(ft_jac_weight), "jac_b": _np(ft_jac_bias),
            "hess": _np(hess_api), "batch_jac": _np(batch_jacobian0),
            "batch_hess": _np(batch_hess), "hvp": _np(result), "params": {"weight": _np(weight)}}


def test_jacobians_hessians_tutorial_runs_the_same():
    out = _parity(jacobians, loss_rtol=1e-10, loss_atol=1e-13)
    assert out["batch_hess"].shape == (5, 6, 6, 6)


def test_jacobians_hessians_tutorial_runs_in_minidl():
    out = jacobians(minidl)
    np.testing.assert_allclose(out["hess"], np.swapaxes(out["hess"], 1, 2), atol=1e-12)


# ---- 10. custom autograd Functions: LegendrePolynomial3, double backward, once_differentiable,
# mark_non_differentiable, set_materialize_grads, needs_input_grad -------------------------------
def custom_functions(tt, state=None, steps=40):
    Function = tt.autograd.Function
    once_differentiable = importlib.import_module(
        tt.__name__ + ".autograd.function").once_differentiable

    class LegendrePolynomial3(Function):
        @staticmethod
        def forward(ctx, input):
            ctx.save_for_backward(input)
            return 0.5 * (5 * input ** 3 - 3 * input)

        @staticmethod
        def backward(ctx, grad_output):
            input, = ctx.saved_tensors
            return grad_output * 1.5 * (5 * input ** 2 - 1)

    dtype = tt.float64
    x = tt.linspace(-math.pi, math.pi, 200, dtype=dtype)
    y = tt.sin(x)
    init = state or {"a": np.array(0.0), "b": np.array(-1.0), "c": np.array(0.0),
                     "d": np.array(0.3)}
    a, b, c, d = (tt.full((), float(init[k]), dtype=dtype, requires_grad=True) for k in "abcd")
    learning_rate = 5e-6
    losses = []
    for t in range(steps):
        P3 = LegendrePolynomial3.apply
        y_pred = a + b * P3(c + d * x)
        loss = (y_pred - y).pow(2).sum()
        losses.append(loss.item())
        loss.backward()
        with tt.no_grad():
            a -= learning_rate * a.grad
            b -= learning_rate * b.grad
            c -= learning_rate * c.grad
            d -= learning_rate * d.grad
            a.grad = None
            b.grad = None
            c.grad = None
            d.grad = None
    params = {k: _np(v) for k, v in zip("abcd", (a, b, c, d))}
    if not steps:
        return {"params": params}

    class Square(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x ** 2

        @staticmethod
        def backward(ctx, grad_out):
            x, = ctx.saved_tensors
            return grad_out * 2 * x

    class Exp(Function):
        @staticmethod
        def forward(ctx, x):
            result = tt.exp(x)
            ctx.save_for_backward(result)
            return result

        @staticmethod
        def backward(ctx, grad_out):
            result, = ctx.saved_tensors
            return result * grad_out

    class Sinh(Function):
        @staticmethod
        def forward(ctx, x):
            expx = tt.exp(x)
            expnegx = tt.exp(-x)
            ctx.save_for_backward(expx, expnegx)
            return (expx - expnegx) / 2, expx, expnegx

        @staticmethod
        def backward(ctx, grad_out, _grad_out_exp, _grad_out_negexp):
            expx, expnegx = ctx.saved_tensors
            grad_input = grad_out * (expx + expnegx) / 2
            grad_input += _grad_out_exp * expx
            grad_input -= _grad_out_negexp * expnegx
            return grad_input

    def sinh(x):
        return Sinh.apply(x)[0]

    def _cube_forward(x):
        return x ** 3

    def _cube_backward(grad_out, x):
        return grad_out * 3 * x ** 2

    def _cube_backward_backward(grad_out, sav_grad_out, x):
        return grad_out * sav_grad_out * 6 * x

    def _cube_backward_backward_grad_out(grad_out, x):
        return grad_out * 3 * x ** 2

    class Cube(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return _cube_forward(x)

        @staticmethod
        def backward(ctx, grad_out):
            x, = ctx.saved_tensors
            return CubeBackward.apply(grad_out, x)

    class CubeBackward(Function):
        @staticmethod
        def forward(ctx, grad_out, x):
            ctx.save_for_backward(x, grad_out)
            return _cube_backward(grad_out, x)

        @staticmethod
        def backward(ctx, grad_out):
            x, sav_grad_out = ctx.saved_tensors
            dx = _cube_backward_backward(grad_out, sav_grad_out, x)
            dgrad_out = _cube_backward_backward_grad_out(grad_out, x)
            return dgrad_out, dx

    class OnceSquare(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        @once_differentiable
        def backward(ctx, grad_out):
            x, = ctx.saved_tensors
            return 2 * x * grad_out

    class SortWithIndices(Function):
        @staticmethod
        def forward(ctx, x):
            values, idx = x.sort()
            ctx.mark_non_differentiable(idx)
            ctx.save_for_backward(x, idx)
            return values, idx

        @staticmethod
        def backward(ctx, g, _g_idx):
            x, idx = ctx.saved_tensors
            grad_input = tt.zeros_like(x)
            grad_input.index_add_(0, idx, g)
            return grad_input

    class ScaleMaybe(Function):
        @staticmethod
        def forward(ctx, x, k, y):
            ctx.set_materialize_grads(False)
            ctx.k = k
            return x.clone(), y * 2

        @staticmethod
        def backward(ctx, g1, g2):
            gx = g1 * ctx.k if g1 is not None else None
            gy = g2 * 2 if g2 is not None and ctx.needs_input_grad[2] else None
            return gx, None, gy

    gradcheck, gradgradcheck = tt.autograd.gradcheck, tt.autograd.gradgradcheck
    z = tt.from_numpy(np.random.default_rng(21).standard_normal(5)).requires_grad_()
    facts = []
    for fn in (Square.apply, Exp.apply, sinh, Cube.apply):
        facts.append(bool(gradcheck(fn, z)) and bool(gradgradcheck(fn, z)))
    v = tt.ones(5, dtype=dtype, requires_grad=True)  # a gradient that itself needs one
    g, = tt.autograd.grad(OnceSquare.apply(z), z, v, create_graph=True)
    try:
        g.sum().backward()
        facts.append("no error")
    except RuntimeError as e:
        facts.append("trying to differentiate twice a function that was marked with "
                     "@once_differentiable" in str(e))
    values, idx = SortWithIndices.apply(z)
    facts.append((values.requires_grad, idx.requires_grad))
    (values * tt.arange(5, dtype=dtype)).sum().backward()
    sort_grad = _np(z.grad)
    z.grad = None
    w = tt.ones(3, dtype=dtype, requires_grad=True)
    u = tt.ones(3, dtype=dtype, requires_grad=False)
    o1, o2 = ScaleMaybe.apply(w, 3.0, u)
    o1.sum().backward()  # o2 gets no gradient: g2 is None, not zeros
    facts.append(w.grad.tolist())
    hess = []
    for fn in (Square.apply, Cube.apply, sinh):
        g1, = tt.autograd.grad(fn(z).sum(), z, create_graph=True)
        g2, = tt.autograd.grad(g1.sum(), z)
        hess.append(_np(g2))
    return {"losses": losses, "facts": repr(facts), "sort_grad": sort_grad,
            "hess": np.array(hess), "params": params}


def test_custom_function_tutorials_run_the_same():
    out = _parity(custom_functions)
    assert out["losses"][-1] < out["losses"][0]


def test_custom_function_tutorials_run_in_minidl():
    out = custom_functions(minidl, steps=3)
    assert out["facts"].startswith("[True, True, True, True, True, (True, False), [3.0, 3.0, 3.0]")


# ---- 11. text classification: EmbeddingBag with offsets, collate_fn, StepLR, clip_grad_norm_ --
def text_classification(tt, state=None, steps=2):
    nn = tt.nn
    rng = np.random.default_rng(22)
    words = ["w%d" % i for i in range(30)]
    train_iter = []
    for _ in range(40):  # label 1..4 biases which words the sentence uses
        label = int(rng.integers(1, 5))
        n = int(rng.integers(3, 9))
        tokens = rng.choice(words[(label - 1) * 6:(label - 1) * 6 + 12], n)
        train_iter.append((label, " ".join(tokens) + " ."))

    def tokenizer(line):  # basic_english, for these sentences
        return line.lower().replace(".", " . ").split()

    counts = collections.Counter(tok for _, text in train_iter for tok in tokenizer(text))
    itos = ["<unk>"] + sorted(counts, key=lambda w: (-counts[w], w))
    stoi = {w: i for i, w in enumerate(itos)}

    def vocab(tokens):
        return [stoi.get(t, 0) for t in tokens]

    def text_pipeline(x):
        return vocab(tokenizer(x))

    def label_pipeline(x):
        return int(x) - 1

    def collate_batch(batch):
        label_list, text_list, offsets = [], [], [0]
        for _label, _text in batch:
            label_list.append(label_pipeline(_label))
            processed_text = tt.tensor(text_pipeline(_text), dtype=tt.int64)
            text_list.append(processed_text)
            offsets.append(processed_text.size(0))
        label_list = tt.tensor(label_list, dtype=tt.int64)
        offsets = tt.tensor(offsets[:-1]).cumsum(dim=0)
        text_list = tt.cat(text_list)
        return label_list, text_list, offsets

    class TextClassificationModel(nn.Module):
        def __init__(self, vocab_size, embed_dim, num_class):
            super(TextClassificationModel, self).__init__()
            self.embedding = nn.EmbeddingBag(vocab_size, embed_dim, sparse=False)
            self.fc = nn.Linear(embed_dim, num_class)
            self.init_weights()

        def init_weights(self):
            initrange = 0.5
            with tt.no_grad():  # the tutorial: self.embedding.weight.data.uniform_(...)
                self.embedding.weight.uniform_(-initrange, initrange)
                self.fc.weight.uniform_(-initrange, initrange)
                self.fc.bias.zero_()

        def forward(self, text, offsets):
            embedded = self.embedding(text, offsets)
            return self.fc(embedded)

    num_class = len(set([label for (label, text) in train_iter]))
    model = TextClassificationModel(len(itos), 8, num_class).double()
    _load(model, tt, state)
    criterion = tt.nn.CrossEntropyLoss()
    optimizer = tt.optim.SGD(model.parameters(), lr=5)
    scheduler = tt.optim.lr_scheduler.StepLR(optimizer, 1.0, gamma=0.1)
    order = np.random.default_rng(23).permutation(len(train_iter))
    split_train_ = tt.utils.data.Subset(train_iter, order[:32].tolist())
    split_valid_ = tt.utils.data.Subset(train_iter, order[32:].tolist())
    train_dataloader = tt.utils.data.DataLoader(split_train_, batch_size=8, shuffle=False,
                                                collate_fn=collate_batch)
    valid_dataloader = tt.utils.data.DataLoader(split_valid_, batch_size=8, shuffle=False,
                                                collate_fn=collate_batch)

    def train(dataloader):
        model.train()
        total_acc, total_count = 0, 0
        losses = []
        for idx, (label, text, offsets) in enumerate(dataloader):
            optimizer.zero_grad()
            predicted_label = model(text, offsets)
            loss = criterion(predicted_label, label)
            loss.backward()
            tt.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
            optimizer.step()
            total_acc += (predicted_label.argmax(1) == label).sum().item()
            total_count += label.size(0)
            losses.append(loss.item())
        return losses

    def evaluate(dataloader):
        model.eval()
        total_acc, total_count = 0, 0
        with tt.no_grad():
            for idx, (label, text, offsets) in enumerate(dataloader):
                predicted_label = model(text, offsets)
                total_acc += (predicted_label.argmax(1) == label).sum().item()
                total_count += label.size(0)
        return total_acc / total_count

    total_accu = None
    losses, accus, lrs = [], [], []
    for epoch in range(1, steps + 1):
        losses += train(train_dataloader)
        accu_val = evaluate(valid_dataloader)
        if total_accu is not None and total_accu > accu_val:
            scheduler.step()
        else:
            total_accu = accu_val
        accus.append(accu_val)
        lrs.append(scheduler.get_last_lr()[0])

    def predict(text, text_pipeline):
        with tt.no_grad():
            text = tt.tensor(text_pipeline(text))
            output = model(text, tt.tensor([0]))
            return output.argmax(1).item() + 1

    guess = predict("w1 w2 w3 unknownword .", text_pipeline)
    return {"losses": losses, "accus": accus, "lrs": lrs, "guess": guess, "params": _params(model)}


def test_text_classification_tutorial_trains_the_same():
    _parity(text_classification, steps=3)


def test_text_classification_tutorial_runs_in_minidl():
    out = text_classification(minidl, steps=2)
    assert 1 <= out["guess"] <= 4 and np.isfinite(out["losses"]).all()


# ---- 12. chatbot: packed bidirectional GRU encoder, Luong attention, masked NLL, teacher forcing
def chatbot(tt, state=None, steps=3):
    import itertools
    nn, F, optim = tt.nn, tt.nn.functional, tt.optim
    PAD_token, SOS_token, EOS_token = 0, 1, 2
    device = tt.device("cpu")
    pairs = [["hi there", "hello friend"], ["how are you", "i am fine thanks"],
             ["what is your name", "i am a bot"], ["good night", "sleep well"],
             ["see you", "bye"], ["where are you", "i am here"]]
    words = sorted({w for p in pairs for s in p for w in s.split(" ")})
    word2index = {w: i + 3 for i, w in enumerate(words)}
    index2word = {i: w for w, i in word2index.items()}
    index2word.update({PAD_token: "PAD", SOS_token: "SOS", EOS_token: "EOS"})
    num_words = len(word2index) + 3

    def indexesFromSentence(sentence):
        return [word2index[word] for word in sentence.split(' ')] + [EOS_token]

    def zeroPadding(l, fillvalue=PAD_token):  # noqa: E741 (the tutorial's name)
        return list(itertools.zip_longest(*l, fillvalue=fillvalue))

    def binaryMatrix(l, value=PAD_token):  # noqa: E741
        m = []
        for i, seq in enumerate(l):
            m.append([])
            for token in seq:
                m[i].append(0 if token == PAD_token else 1)
        return m

    def inputVar(l):  # noqa: E741
        indexes_batch = [indexesFromSentence(sentence) for sentence in l]
        lengths = tt.tensor([len(indexes) for indexes in indexes_batch])
        padList = zeroPadding(indexes_batch)
        return tt.LongTensor(padList), lengths

    def outputVar(l):  # noqa: E741
        indexes_batch = [indexesFromSentence(sentence) for sentence in l]
        max_target_len = max([len(indexes) for indexes in indexes_batch])
        padList = zeroPadding(indexes_batch)
        mask = binaryMatrix(padList)
        mask = tt.BoolTensor(mask)
        return tt.LongTensor(padList), mask, max_target_len

    def batch2TrainData(pair_batch):
        pair_batch.sort(key=lambda x: len(x[0].split(" ")), reverse=True)
        input_batch, output_batch = [], []
        for pair in pair_batch:
            input_batch.append(pair[0])
            output_batch.append(pair[1])
        inp, lengths = inputVar(input_batch)
        output, mask, max_target_len = outputVar(output_batch)
        return inp, lengths, output, mask, max_target_len

    class EncoderRNN(nn.Module):
        def __init__(self, hidden_size, embedding, n_layers=1, dropout=0):
            super(EncoderRNN, self).__init__()
            self.n_layers = n_layers
            self.hidden_size = hidden_size
            self.embedding = embedding
            self.gru = nn.GRU(hidden_size, hidden_size, n_layers,
                              dropout=(0 if n_layers == 1 else dropout), bidirectional=True)

        def forward(self, input_seq, input_lengths, hidden=None):
            embedded = self.embedding(input_seq)
            packed = nn.utils.rnn.pack_padded_sequence(embedded, input_lengths)
            outputs, hidden = self.gru(packed, hidden)
            outputs, _ = nn.utils.rnn.pad_packed_sequence(outputs)
            outputs = outputs[:, :, :self.hidden_size] + outputs[:, :, self.hidden_size:]
            return outputs, hidden

    class Attn(nn.Module):
        def __init__(self, method, hidden_size):
            super(Attn, self).__init__()
            self.method = method
            if self.method not in ['dot', 'general', 'concat']:
                raise ValueError(self.method, "is not an appropriate attention method.")
            self.hidden_size = hidden_size
            if self.method == 'general':
                self.attn = nn.Linear(self.hidden_size, hidden_size)
            elif self.method == 'concat':
                self.attn = nn.Linear(self.hidden_size * 2, hidden_size)
                self.v = nn.Parameter(tt.FloatTensor(hidden_size))

        def dot_score(self, hidden, encoder_output):
            return tt.sum(hidden * encoder_output, dim=2)

        def general_score(self, hidden, encoder_output):
            energy = self.attn(encoder_output)
            return tt.sum(hidden * energy, dim=2)

        def concat_score(self, hidden, encoder_output):
            energy = self.attn(tt.cat((hidden.expand(encoder_output.size(0), -1, -1),
                                       encoder_output), 2)).tanh()
            return tt.sum(self.v * energy, dim=2)

        def forward(self, hidden, encoder_outputs):
            if self.method == 'general':
                attn_energies = self.general_score(hidden, encoder_outputs)
            elif self.method == 'concat':
                attn_energies = self.concat_score(hidden, encoder_outputs)
            elif self.method == 'dot':
                attn_energies = self.dot_score(hidden, encoder_outputs)
            attn_energies = attn_energies.t()
            return F.softmax(attn_energies, dim=1).unsqueeze(1)

    class LuongAttnDecoderRNN(nn.Module):
        def __init__(self, attn_model, embedding, hidden_size, output_size, n_layers=1,
                     dropout=0.1):
            super(LuongAttnDecoderRNN, self).__init__()
            self.attn_model = attn_model
            self.hidden_size = hidden_size
            self.output_size = output_size
            self.n_layers = n_layers
            self.dropout = dropout
            self.embedding = embedding
            self.embedding_dropout = nn.Dropout(dropout)
            self.gru = nn.GRU(hidden_size, hidden_size, n_layers,
                              dropout=(0 if n_layers == 1 else dropout))
            self.concat = nn.Linear(hidden_size * 2, hidden_size)
            self.out = nn.Linear(hidden_size, output_size)
            self.attn = Attn(attn_model, hidden_size)

        def forward(self, input_step, last_hidden, encoder_outputs):
            embedded = self.embedding(input_step)
            embedded = self.embedding_dropout(embedded)
            rnn_output, hidden = self.gru(embedded, last_hidden)
            attn_weights = self.attn(rnn_output, encoder_outputs)
            context = attn_weights.bmm(encoder_outputs.transpose(0, 1))
            rnn_output = rnn_output.squeeze(0)
            context = context.squeeze(1)
            concat_input = tt.cat((rnn_output, context), 1)
            concat_output = tt.tanh(self.concat(concat_input))
            output = self.out(concat_output)
            output = F.softmax(output, dim=1)
            return output, hidden

    def maskNLLLoss(inp, target, mask):
        nTotal = mask.sum()
        crossEntropy = -tt.log(tt.gather(inp, 1, target.view(-1, 1)).squeeze(1))
        loss = crossEntropy.masked_select(mask).mean()
        loss = loss.to(device)
        return loss, nTotal.item()

    hidden_size, clip, teacher_forcing_ratio = 8, 50.0, 0.5
    embedding = nn.Embedding(num_words, hidden_size)
    encoder = EncoderRNN(hidden_size, embedding, 2, 0.0)
    decoder = LuongAttnDecoderRNN('concat', embedding, hidden_size, num_words, 2, 0.0)
    model = nn.ModuleDict({"encoder": encoder, "decoder": decoder}).double()
    if state is None:
        with tt.no_grad():
            decoder.attn.v.uniform_(-0.1, 0.1)  # FloatTensor(n) is uninitialised memory
    _load(model, tt, state)
    encoder_optimizer = optim.Adam(encoder.parameters(), lr=0.01)
    decoder_optimizer = optim.Adam(decoder.parameters(), lr=0.01 * 5.0)
    coin = random.Random(24)
    pick = random.Random(25)

    def train(input_variable, lengths, target_variable, mask, max_target_len, batch_size):
        encoder_optimizer.zero_grad()
        decoder_optimizer.zero_grad()
        lengths = lengths.to("cpu")
        loss = 0
        print_losses = []
        n_totals = 0
        encoder_outputs, encoder_hidden = encoder(input_variable, lengths)
        decoder_input = tt.LongTensor([[SOS_token for _ in range(batch_size)]])
        decoder_hidden = encoder_hidden[:decoder.n_layers]
        use_teacher_forcing = True if coin.random() < teacher_forcing_ratio else False
        for t in range(max_target_len):
            decoder_output, decoder_hidden = decoder(decoder_input, decoder_hidden,
                                                     encoder_outputs)
            if use_teacher_forcing:
                decoder_input = target_variable[t].view(1, -1)
            else:
                _, topi = decoder_output.topk(1)
                decoder_input = tt.LongTensor([[topi[i][0] for i in range(batch_size)]])
            mask_loss, nTotal = maskNLLLoss(decoder_output, target_variable[t], mask[t])
            loss += mask_loss
            print_losses.append(mask_loss.item() * nTotal)
            n_totals += nTotal
        loss.backward()
        nn.utils.clip_grad_norm_(encoder.parameters(), clip)
        nn.utils.clip_grad_norm_(decoder.parameters(), clip)
        encoder_optimizer.step()
        decoder_optimizer.step()
        return sum(print_losses) / n_totals

    class GreedySearchDecoder(nn.Module):
        def __init__(self, encoder, decoder):
            super(GreedySearchDecoder, self).__init__()
            self.encoder = encoder
            self.decoder = decoder

        def forward(self, input_seq, input_length, max_length):
            encoder_outputs, encoder_hidden = self.encoder(input_seq, input_length)
            decoder_hidden = encoder_hidden[:decoder.n_layers]
            decoder_input = tt.ones(1, 1, device=device, dtype=tt.long) * SOS_token
            all_tokens = tt.zeros([0], device=device, dtype=tt.long)
            all_scores = tt.zeros([0], device=device, dtype=tt.float64)
            for _ in range(max_length):
                decoder_output, decoder_hidden = self.decoder(decoder_input, decoder_hidden,
                                                              encoder_outputs)
                decoder_scores, decoder_input = tt.max(decoder_output, dim=1)
                all_tokens = tt.cat((all_tokens, decoder_input), dim=0)
                all_scores = tt.cat((all_scores, decoder_scores), dim=0)
                decoder_input = tt.unsqueeze(decoder_input, 0)
            return all_tokens, all_scores

    losses = []
    encoder.train()
    decoder.train()
    for iteration in range(steps):
        batch = batch2TrainData([pick.choice(pairs) for _ in range(4)])
        input_variable, lengths, target_variable, mask, max_target_len = batch
        losses.append(train(input_variable, lengths, target_variable, mask, max_target_len, 4))
    encoder.eval()
    decoder.eval()
    searcher = GreedySearchDecoder(encoder, decoder)
    indexes_batch = [indexesFromSentence("how are you")]
    lengths = tt.tensor([len(indexes) for indexes in indexes_batch])
    input_batch = tt.LongTensor(indexes_batch).transpose(0, 1)
    with tt.no_grad():
        tokens, scores = searcher(input_batch, lengths, 5)
    decoded_words = [index2word[token.item()] for token in tokens]
    return {"losses": losses, "scores": _np(scores), "reply": " ".join(decoded_words),
            "params": _params(model)}


def test_chatbot_tutorial_trains_the_same():
    _parity(chatbot, steps=4)


def test_chatbot_tutorial_runs_in_minidl():
    out = chatbot(minidl, steps=2)
    assert len(out["reply"].split()) == 5 and ((out["scores"] > 0) & (out["scores"] <= 1)).all()


# ---- 13. "What is torch.nn really": manual weights -> nn.Module -> optim -> DataLoader -> CNN --
def nn_really(tt, state=None, steps=2):
    nn, F, optim = tt.nn, tt.nn.functional, tt.optim
    TensorDataset, DataLoader = tt.utils.data.TensorDataset, tt.utils.data.DataLoader
    rng = np.random.default_rng(26)
    # the tutorial maps torch.tensor over its (float32) arrays; minidl.tensor makes float32 of
    # a float64 array by design (docs/from-pytorch.md), so from_numpy keeps these float64
    x_train, y_train, x_valid, y_valid = map(
        tt.from_numpy, (rng.random((48, 64)), rng.integers(0, 10, 48), rng.random((16, 64)),
                        rng.integers(0, 10, 16)))
    n, c = x_train.shape
    bs, lr, epochs = 16, 0.5, steps
    init = state or {"weights": (rng.standard_normal((64, 10)) / math.sqrt(64)),
                     "lin.weight": rng.standard_normal((10, 64)) / 8, "lin.bias": np.zeros(10)}
    weights = tt.from_numpy(init["weights"].copy())
    weights.requires_grad_()
    bias = tt.zeros(10, requires_grad=True, dtype=tt.float64)

    class Lambda(nn.Module):
        def __init__(self, func):
            super().__init__()
            self.func = func

        def forward(self, x):
            return self.func(x)

    cnn = nn.Sequential(
        nn.Conv2d(1, 8, kernel_size=3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, kernel_size=3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(8, 10, kernel_size=3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), Lambda(lambda x: x.view(x.size(0), -1)),
    ).double()
    _load(cnn, tt, state, "cnn.")
    if not steps:
        return {"params": {**{k: np.asarray(v) for k, v in init.items()}, **_params(cnn, "cnn.")}}

    def log_softmax(x):
        return x - x.exp().sum(-1).log().unsqueeze(-1)

    def model(xb):
        return log_softmax(xb @ weights + bias)

    def nll(input, target):
        return -input[range(target.shape[0]), target].mean()

    def accuracy(out, yb):
        preds = tt.argmax(out, dim=1)
        return (preds == yb).float().mean()

    loss_func = nll
    out = {"first_loss": loss_func(model(x_train[0:bs]), y_train[0:bs]).item()}
    for epoch in range(epochs):
        for i in range((n - 1) // bs + 1):
            start_i = i * bs
            end_i = start_i + bs
            xb = x_train[start_i:end_i]
            yb = y_train[start_i:end_i]
            pred = model(xb)
            loss = loss_func(pred, yb)
            loss.backward()
            with tt.no_grad():
                weights -= weights.grad * lr
                bias -= bias.grad * lr
                weights.grad.zero_()
                bias.grad.zero_()
    out["manual"] = [loss_func(model(xb), yb).item(), accuracy(model(xb), yb).item()]
    loss_func = F.cross_entropy

    def model(xb):  # noqa: F811 (the tutorial redefines it)
        return xb @ weights + bias

    out["cross_entropy"] = loss_func(model(xb), yb).item()

    class Mnist_Logistic(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(64, 10)

        def forward(self, xb):
            return self.lin(xb)

    def get_model():
        model = Mnist_Logistic().double()
        model.load_state_dict({k: tt.from_numpy(np.asarray(init[k]).copy())
                               for k in ("lin.weight", "lin.bias")})
        return model, optim.SGD(model.parameters(), lr=lr)

    model, opt = get_model()

    def fit_by_hand():
        for epoch in range(epochs):
            for i in range((n - 1) // bs + 1):
                xb = x_train[i * bs:i * bs + bs]
                yb = y_train[i * bs:i * bs + bs]
                loss = loss_func(model(xb), yb)
                loss.backward()
                with tt.no_grad():
                    for p in model.parameters():
                        p -= p.grad * lr
                    model.zero_grad()

    fit_by_hand()
    out["module"] = loss_func(model(xb), yb).item()
    train_ds = TensorDataset(x_train, y_train)
    valid_ds = TensorDataset(x_valid, y_valid)

    def get_data(train_ds, valid_ds, bs):
        return (DataLoader(train_ds, batch_size=bs, shuffle=False),
                DataLoader(valid_ds, batch_size=bs * 2))

    def loss_batch(model, loss_func, xb, yb, opt=None):
        loss = loss_func(model(xb), yb)
        if opt is not None:
            loss.backward()
            opt.step()
            opt.zero_grad()
        return loss.item(), len(xb)

    history = []

    def fit(epochs, model, loss_func, opt, train_dl, valid_dl):
        for epoch in range(epochs):
            model.train()
            for xb, yb in train_dl:
                loss_batch(model, loss_func, xb, yb, opt)
            model.eval()
            with tt.no_grad():
                losses, nums = zip(*[loss_batch(model, loss_func, xb, yb) for xb, yb in valid_dl])
            val_loss = np.sum(np.multiply(losses, nums)) / np.sum(nums)
            history.append(val_loss)

    train_dl, valid_dl = get_data(train_ds, valid_ds, bs)
    model, opt = get_model()
    fit(epochs, model, loss_func, opt, train_dl, valid_dl)

    def preprocess(x, y):
        return x.view(-1, 1, 8, 8), y

    class WrappedDataLoader:
        def __init__(self, dl, func):
            self.dl = dl
            self.func = func

        def __len__(self):
            return len(self.dl)

        def __iter__(self):
            for b in self.dl:
                yield (self.func(*b))

    train_dl = WrappedDataLoader(train_dl, preprocess)
    valid_dl = WrappedDataLoader(valid_dl, preprocess)
    opt = optim.SGD(cnn.parameters(), lr=0.1, momentum=0.9)
    fit(epochs, cnn, loss_func, opt, train_dl, valid_dl)
    out["history"] = history
    params = {"weights": _np(weights), "bias": _np(bias), "lin.weight": _np(model.lin.weight),
              "lin.bias": _np(model.lin.bias), **_params(cnn, "cnn.")}
    return {**out, "params": params}


def test_what_is_torch_nn_really_runs_the_same():
    _parity(nn_really)


def test_what_is_torch_nn_really_runs_in_minidl():
    out = nn_really(minidl, steps=2)
    assert len(out["history"]) == 4 and np.isfinite(out["history"]).all()


# ---- 14. knowledge distillation: temperature-scaled soft targets, KL, cosine hidden loss -----
def distillation(tt, state=None, steps=2):
    nn, optim = tt.nn, tt.optim

    class DeepNN(nn.Module):
        def __init__(self, num_classes=10):
            super(DeepNN, self).__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 8, kernel_size=3, padding=1), nn.ReLU(),
                nn.Conv2d(8, 8, kernel_size=3, padding=1), nn.ReLU(),
                nn.MaxPool2d(kernel_size=2, stride=2),
                nn.Conv2d(8, 8, kernel_size=3, padding=1), nn.ReLU(),
                nn.MaxPool2d(kernel_size=2, stride=2))
            self.classifier = nn.Sequential(nn.Linear(8 * 2 * 2, 16), nn.ReLU(), nn.Dropout(0.0),
                                            nn.Linear(16, num_classes))

        def forward(self, x):
            x = self.features(x)
            flattened_conv_output = tt.flatten(x, 1)
            x = self.classifier(flattened_conv_output)
            flattened_conv_output_after_pooling = tt.nn.functional.avg_pool1d(
                flattened_conv_output, 2)
            return x, flattened_conv_output_after_pooling

    class LightNN(nn.Module):
        def __init__(self, num_classes=10):
            super(LightNN, self).__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 4, kernel_size=3, padding=1), nn.ReLU(),
                nn.MaxPool2d(kernel_size=2, stride=2),
                nn.Conv2d(4, 4, kernel_size=3, padding=1), nn.ReLU(),
                nn.MaxPool2d(kernel_size=2, stride=2))
            self.classifier = nn.Sequential(nn.Linear(4 * 2 * 2, 8), nn.ReLU(), nn.Dropout(0.0),
                                            nn.Linear(8, num_classes))

        def forward(self, x):
            x = self.features(x)
            flattened_conv_output = tt.flatten(x, 1)
            x = self.classifier(flattened_conv_output)
            return x, flattened_conv_output

    teacher, student = DeepNN().double(), LightNN().double()
    _load(teacher, tt, state, "teacher.")
    _load(student, tt, state, "student.")
    rng = np.random.default_rng(27)
    data = tt.utils.data.TensorDataset(tt.from_numpy(rng.standard_normal((24, 3, 8, 8))),
                                       tt.from_numpy(rng.integers(0, 10, 24)))
    train_loader = tt.utils.data.DataLoader(data, batch_size=8, shuffle=False)

    def train(model, train_loader, epochs, learning_rate):
        criterion = nn.CrossEntropyLoss()
        optimizer = optim.Adam(model.parameters(), lr=learning_rate)
        model.train()
        losses = []
        for epoch in range(epochs):
            running_loss = 0.0
            for inputs, labels in train_loader:
                optimizer.zero_grad()
                outputs, _ = model(inputs)
                loss = criterion(outputs, labels)
                loss.backward()
                optimizer.step()
                running_loss += loss.item()
            losses.append(running_loss / len(train_loader))
        return losses

    def train_knowledge_distillation(teacher, student, train_loader, epochs, learning_rate, T,
                                     soft_target_loss_weight, ce_loss_weight, kl_div=False):
        ce_loss = nn.CrossEntropyLoss()
        optimizer = optim.Adam(student.parameters(), lr=learning_rate)
        teacher.eval()
        student.train()
        losses = []
        for epoch in range(epochs):
            running_loss = 0.0
            for inputs, labels in train_loader:
                optimizer.zero_grad()
                with tt.no_grad():
                    teacher_logits, _ = teacher(inputs)
                student_logits, _ = student(inputs)
                soft_targets = nn.functional.softmax(teacher_logits / T, dim=-1)
                soft_prob = nn.functional.log_softmax(student_logits / T, dim=-1)
                if kl_div:
                    soft_targets_loss = nn.functional.kl_div(
                        soft_prob, soft_targets, reduction='batchmean') * (T ** 2)
                else:
                    soft_targets_loss = (tt.sum(soft_targets * (soft_targets.log() - soft_prob))
                                         / soft_prob.size()[0] * (T ** 2))
                label_loss = ce_loss(student_logits, labels)
                loss = soft_target_loss_weight * soft_targets_loss + ce_loss_weight * label_loss
                loss.backward()
                optimizer.step()
                running_loss += loss.item()
            losses.append(running_loss / len(train_loader))
        return losses

    def train_cosine_loss(teacher, student, train_loader, epochs, learning_rate,
                          hidden_rep_loss_weight, ce_loss_weight):
        ce_loss = nn.CrossEntropyLoss()
        cosine_loss = nn.CosineEmbeddingLoss()
        optimizer = optim.Adam(student.parameters(), lr=learning_rate)
        teacher.eval()
        student.train()
        losses = []
        for epoch in range(epochs):
            running_loss = 0.0
            for inputs, labels in train_loader:
                optimizer.zero_grad()
                with tt.no_grad():
                    _, teacher_hidden_representation = teacher(inputs)
                student_logits, student_hidden_representation = student(inputs)
                hidden_rep_loss = cosine_loss(student_hidden_representation,
                                              teacher_hidden_representation,
                                              target=tt.ones(inputs.size(0), dtype=tt.float64))
                label_loss = ce_loss(student_logits, labels)
                loss = hidden_rep_loss_weight * hidden_rep_loss + ce_loss_weight * label_loss
                loss.backward()
                optimizer.step()
                running_loss += loss.item()
            losses.append(running_loss / len(train_loader))
        return losses

    def test(model, test_loader):
        model.eval()
        correct, total = 0, 0
        with tt.no_grad():
            for inputs, labels in test_loader:
                outputs, _ = model(inputs)
                # the tutorial's torch.max(outputs.data, 1): minidl's .data is the ndarray
                _, predicted = tt.max(outputs.data if tt is torch else outputs, 1)
                total += labels.size(0)
                correct += (predicted == labels).sum().item()
        return 100 * correct / total

    if not steps:
        return {"params": {**_params(teacher, "teacher."), **_params(student, "student.")}}
    out = {"teacher": train(teacher, train_loader, steps, 0.001)}
    out["teacher_acc"] = test(teacher, train_loader)
    total_params_deep = "{:,}".format(sum(p.numel() for p in teacher.parameters()))
    total_params_light = "{:,}".format(sum(p.numel() for p in student.parameters()))
    out["sizes"] = total_params_deep + " " + total_params_light
    out["kd"] = train_knowledge_distillation(teacher, student, train_loader, steps, 0.001, T=2,
                                             soft_target_loss_weight=0.25, ce_loss_weight=0.75)
    out["kd_kl"] = train_knowledge_distillation(teacher, student, train_loader, 1, 0.001, T=2,
                                                soft_target_loss_weight=0.25,
                                                ce_loss_weight=0.75, kl_div=True)
    out["cosine"] = train_cosine_loss(teacher, student, train_loader, steps, 0.001,
                                      hidden_rep_loss_weight=0.25, ce_loss_weight=0.75)
    out["student_acc"] = test(student, train_loader)
    return {**out, "params": {**_params(teacher, "teacher."), **_params(student, "student.")}}


def test_knowledge_distillation_tutorial_trains_the_same():
    _parity(distillation)


def test_knowledge_distillation_tutorial_runs_in_minidl():
    out = distillation(minidl, steps=1)
    assert out["sizes"].count(",") >= 1 and np.isfinite(out["kd"] + out["cosine"]).all()


# ---- 15. forward-mode AD: dual numbers, modules with dual parameters, custom jvp, func.jvp ---
def forward_ad(tt, state=None, steps=1):
    nn = tt.nn
    fwAD = importlib.import_module(tt.__name__ + ".autograd.forward_ad")
    from_func = importlib.import_module(tt.__name__ + ".func")
    functional_call = from_func.functional_call
    rng = np.random.default_rng(28)
    primal = tt.from_numpy(rng.standard_normal((4, 4)))
    tangent = tt.from_numpy(rng.standard_normal((4, 4)))
    model = nn.Linear(5, 5).double()
    _load(model, tt, state)
    if not steps:
        return {"params": _params(model)}

    def fn(x, y):
        return x ** 2 + y ** 2

    facts = []
    with fwAD.dual_level():
        dual_input = fwAD.make_dual(primal, tangent)
        facts.append(fwAD.unpack_dual(dual_input).tangent is tangent)
        dual_input_alt = fwAD.make_dual(primal, tangent.T)
        facts.append(fwAD.unpack_dual(dual_input_alt).tangent is tangent)
        plain_tensor = tt.from_numpy(rng.standard_normal((4, 4)))
        dual_output = fn(dual_input, plain_tensor)
        jvp = fwAD.unpack_dual(dual_output).tangent
    facts.append(fwAD.unpack_dual(dual_output).tangent is None)
    input = tt.from_numpy(rng.standard_normal((3, 5)))
    params = {name: p for name, p in model.named_parameters()}
    tangents = {name: tt.from_numpy(rng.random(tuple(p.shape))) for name, p in params.items()}
    with fwAD.dual_level():
        for name, p in params.items():
            delattr(model, name)
            setattr(model, name, fwAD.make_dual(p, tangents[name]))
        out = model(input)
        jvp_module = fwAD.unpack_dual(out).tangent
    for name, p in params.items():  # put the parameters back
        delattr(model, name)
        model.register_parameter(name, p)
    with fwAD.dual_level():
        dual_params = {name: fwAD.make_dual(p, tangents[name]) for name, p in params.items()}
        out = functional_call(model, dual_params, input)
        jvp_functional = fwAD.unpack_dual(out).tangent

    class Fn(tt.autograd.Function):
        @staticmethod
        def forward(ctx, foo):
            result = tt.exp(foo)
            ctx.result = result
            return result

        @staticmethod
        def jvp(ctx, gI):
            gO = gI * ctx.result
            del ctx.result
            return gO

    fn_ = Fn.apply
    x = tt.from_numpy(rng.standard_normal(5)).requires_grad_()
    t = tt.from_numpy(rng.standard_normal(5))
    with fwAD.dual_level():
        dual_input = fwAD.make_dual(x, t)
        dual_output = fn_(dual_input)
        jvp_custom = fwAD.unpack_dual(dual_output).tangent
    facts.append(bool(tt.autograd.gradcheck(Fn.apply, (x,), check_forward_ad=True,
                                            check_backward_ad=False, check_undefined_grad=False,
                                            check_batched_grad=False)))
    x2 = tt.from_numpy(rng.standard_normal(4))
    y2 = tt.from_numpy(rng.standard_normal(4))
    u, v = tt.ones(4, dtype=tt.float64), tt.from_numpy(rng.standard_normal(4))
    primal_out, tangent_out = from_func.jvp(fn, (x2, y2), (u, v))

    def func_params(params, input):
        return functional_call(model, params, input)

    _, jvp_out = from_func.jvp(lambda p: func_params(p, input), (params,), (tangents,))
    return {"facts": repr(facts), "jvp": _np(jvp), "jvp_module": _np(jvp_module),
            "jvp_functional": _np(jvp_functional), "jvp_custom": _np(jvp_custom),
            "func_jvp": [_np(primal_out), _np(tangent_out)], "func_params": _np(jvp_out),
            "params": _params(model)}


def test_forward_mode_ad_tutorial_runs_the_same():
    _parity(forward_ad)


def test_forward_mode_ad_tutorial_runs_in_minidl():
    out = forward_ad(minidl)
    np.testing.assert_allclose(out["jvp_module"], out["jvp_functional"], rtol=1e-12)
    np.testing.assert_allclose(out["jvp_module"], out["func_params"], rtol=1e-12)


# ---- 16. neural tangent kernels: jacobian contraction and NTK-vector products with func ----
def ntk(tt, state=None, steps=1):
    nn = tt.nn
    from_func = importlib.import_module(tt.__name__ + ".func")
    functional_call, vmap, vjp, jvp, jacrev = (from_func.functional_call, from_func.vmap,
                                               from_func.vjp, from_func.jvp, from_func.jacrev)

    class CNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 4, (3, 3))
            self.conv2 = nn.Conv2d(4, 4, (3, 3))
            self.conv3 = nn.Conv2d(4, 4, (3, 3))
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            x = self.conv1(x)
            x = x.relu()
            x = self.conv2(x)
            x = x.relu()
            x = self.conv3(x)
            x = x.mean((2, 3))
            return self.fc(x)

    net = CNN().double()
    _load(net, tt, state)
    if not steps:
        return {"params": _params(net)}
    rng = np.random.default_rng(29)
    x_train = tt.from_numpy(rng.standard_normal((4, 3, 8, 8)))
    x_test = tt.from_numpy(rng.standard_normal((3, 3, 8, 8)))
    params = {k: v.detach() for k, v in net.named_parameters()}

    def fnet_single(params, x):
        return functional_call(net, params, (x.unsqueeze(0),)).squeeze(0)

    def empirical_ntk_jacobian_contraction(fnet_single, params, x1, x2, compute='full'):
        jac1 = vmap(jacrev(fnet_single), (None, 0))(params, x1)
        jac1 = jac1.values()
        jac1 = [j.flatten(2) for j in jac1]
        jac2 = vmap(jacrev(fnet_single), (None, 0))(params, x2)
        jac2 = jac2.values()
        jac2 = [j.flatten(2) for j in jac2]
        if compute == 'full':
            einsum_expr = 'Naf,Mbf->NMab'
        elif compute == 'trace':
            einsum_expr = 'Naf,Maf->NM'
        elif compute == 'diagonal':
            einsum_expr = 'Naf,Maf->NMa'
        else:
            assert False
        result = tt.stack([tt.einsum(einsum_expr, j1, j2) for j1, j2 in zip(jac1, jac2)])
        return result.sum(0)

    def empirical_ntk_ntk_vps(func, params, x1, x2, compute='full'):
        def get_ntk(x1, x2):
            def func_x1(params):
                return func(params, x1)

            def func_x2(params):
                return func(params, x2)

            output, vjp_fn = vjp(func_x1, params)

            def get_ntk_slice(vec):
                vjps = vjp_fn(vec)
                _, jvps = jvp(func_x2, (params,), vjps)
                return jvps

            basis = tt.eye(output.numel(), dtype=output.dtype, device=output.device).view(
                output.numel(), -1)
            return vmap(get_ntk_slice)(basis)

        result = vmap(vmap(get_ntk, (None, 0)), (0, None))(x1, x2)
        if compute == 'full':
            return result
        if compute == 'trace':
            return tt.einsum('NMKK->NM', result)
        if compute == 'diagonal':
            return tt.einsum('NMKK->NMK', result)

    out = {}
    for compute in ('full', 'trace', 'diagonal'):
        out["jac_" + compute] = _np(empirical_ntk_jacobian_contraction(fnet_single, params,
                                                                       x_train, x_test, compute))
    out["ntk_vps"] = _np(empirical_ntk_ntk_vps(fnet_single, params, x_train, x_test, 'full'))
    return {**out, "params": _params(net)}


def test_neural_tangent_kernels_tutorial_runs_the_same():
    _parity(ntk, loss_rtol=1e-9, loss_atol=1e-12)


def test_neural_tangent_kernels_tutorial_runs_in_minidl():
    out = ntk(minidl)
    assert out["jac_full"].shape == (4, 3, 3, 3)
    np.testing.assert_allclose(out["ntk_vps"], out["jac_full"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(out["jac_trace"], np.einsum("NMKK->NM", out["jac_full"]),
                               rtol=1e-10)


# ---- 17. convolutional autoencoder: Conv2d down, ConvTranspose2d up, MSE, Adam with decay ----
def conv_autoencoder(tt, state=None, steps=4):
    nn = tt.nn

    class Autoencoder(nn.Module):
        def __init__(self):
            super(Autoencoder, self).__init__()
            self.encoder = nn.Sequential(
                nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(8, 16, 4))
            self.decoder = nn.Sequential(
                nn.ConvTranspose2d(16, 8, 4), nn.ReLU(),
                nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
                nn.ConvTranspose2d(4, 1, 3, stride=2, padding=1, output_padding=1), nn.Sigmoid())

        def forward(self, x):
            encoded = self.encoder(x)
            decoded = self.decoder(encoded)
            return decoded

    model = Autoencoder().double()
    _load(model, tt, state)
    rng = np.random.default_rng(30)
    images = tt.from_numpy(rng.random((12, 1, 16, 16)))
    loader = tt.utils.data.DataLoader(tt.utils.data.TensorDataset(images), batch_size=4)
    criterion = nn.MSELoss()
    optimizer = tt.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    outputs, losses = [], []
    for epoch in range(steps):
        for (img,) in loader:
            recon = model(img)
            loss = criterion(recon, img)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        losses.append(loss.item())
        outputs.append((epoch, img, recon))
    with tt.no_grad():
        code = model.encoder(images[:2])
    return {"losses": losses, "code": _np(code),
            "recon": _np(outputs[-1][2]) if outputs else np.zeros(1), "params": _params(model)}


def test_conv_autoencoder_trains_the_same():
    _parity(conv_autoencoder)


def test_conv_autoencoder_runs_in_minidl():
    out = conv_autoencoder(minidl, steps=2)
    assert out["code"].shape == (2, 16, 1, 1) and out["recon"].shape == (4, 1, 16, 16)


# ---- 18. siamese network: shared tower on pairs, BCELoss, Adadelta + StepLR; and a cosine ---
# embedding variant with CosineEmbeddingLoss on -1/1 pair labels
def siamese(tt, state=None, steps=3):
    nn, F, optim = tt.nn, tt.nn.functional, tt.optim

    class SiameseNetwork(nn.Module):
        def __init__(self):
            super(SiameseNetwork, self).__init__()
            self.resnet = nn.Sequential(
                nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
                nn.MaxPool2d(2), nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8),
                nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1)))
            self.fc_in_features = 8
            self.fc = nn.Sequential(nn.Linear(self.fc_in_features * 2, 16), nn.ReLU(inplace=True),
                                    nn.Linear(16, 1))
            self.sigmoid = nn.Sigmoid()
            self.resnet.apply(self.init_weights)
            self.fc.apply(self.init_weights)

        def init_weights(self, m):
            if isinstance(m, nn.Linear):
                tt.nn.init.xavier_uniform_(m.weight)
                tt.nn.init.constant_(m.bias, 0.01)  # the example: m.bias.data.fill_(0.01)

        def forward_once(self, x):
            output = self.resnet(x)
            output = output.view(output.size()[0], -1)
            return output

        def forward(self, input1, input2):
            output1 = self.forward_once(input1)
            output2 = self.forward_once(input2)
            output = tt.cat((output1, output2), 1)
            output = self.fc(output)
            output = self.sigmoid(output)
            return output

    model = SiameseNetwork().double()
    _load(model, tt, state)
    if not steps:
        return {"params": _params(model)}
    rng = np.random.default_rng(31)
    digits = rng.random((5, 1, 8, 8))
    pair_rng = np.random.default_rng(32)

    def make_pairs(n):
        a, b, same = [], [], []
        for _ in range(n):
            i = int(pair_rng.integers(5))
            j = i if pair_rng.random() < 0.5 else int(pair_rng.integers(5))
            a.append(digits[i] + 0.1 * pair_rng.standard_normal((1, 8, 8)))
            b.append(digits[j] + 0.1 * pair_rng.standard_normal((1, 8, 8)))
            same.append(float(i == j))
        return tt.from_numpy(np.array(a)), tt.from_numpy(np.array(b)), tt.tensor(
            same, dtype=tt.float64)

    optimizer = optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = tt.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    criterion = nn.BCELoss()
    losses = []
    model.train()
    for epoch in range(steps):
        for batch_idx in range(2):
            images_1, images_2, targets = make_pairs(6)
            optimizer.zero_grad()
            outputs = model(images_1, images_2).squeeze()
            loss = criterion(outputs, targets)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        scheduler.step()
    model.eval()
    test_loss, correct = 0, 0
    with tt.no_grad():
        images_1, images_2, targets = make_pairs(8)
        outputs = model(images_1, images_2).squeeze()
        test_loss += criterion(outputs, targets).sum().item()
        pred = tt.where(outputs > 0.5, 1, 0)
        correct += pred.eq(targets.view_as(pred)).sum().item()
    # the cosine embedding variant: the shared tower's embeddings, targets in {1, -1}
    tower = model.resnet
    cos_opt = optim.SGD(tower.parameters(), lr=0.1, momentum=0.9)
    cosine = nn.CosineEmbeddingLoss(margin=0.2)
    model.train()
    for _ in range(steps):
        images_1, images_2, targets = make_pairs(6)
        e1 = model.forward_once(images_1)
        e2 = model.forward_once(images_2)
        loss = cosine(e1, e2, 2 * targets - 1)
        cos_opt.zero_grad()
        loss.backward()
        cos_opt.step()
        losses.append(loss.item())
    sim = F.cosine_similarity(e1, e2).detach()
    return {"losses": losses, "test_loss": test_loss, "correct": correct,
            "lr": scheduler.get_last_lr(), "sim": _np(sim), "params": _params(model)}


def test_siamese_network_trains_the_same():
    _parity(siamese)


def test_siamese_network_runs_in_minidl():
    out = siamese(minidl, steps=2)
    assert 0 <= out["correct"] <= 8 and np.isclose(out["lr"][0], 0.49)
    assert (np.abs(out["sim"]) <= 1 + 1e-12).all()


# ---- 19. optimizing model parameters: train/test loops over several optimizers and schedulers,
# gradient accumulation, and a checkpoint dict saved mid-training and resumed ------------------
def optimizing(tt, state=None, steps=4, interrupt=None):
    nn = tt.nn
    lr_scheduler = tt.optim.lr_scheduler

    class NeuralNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            self.flatten = nn.Flatten()
            self.linear_relu_stack = nn.Sequential(nn.Linear(16, 12), nn.ReLU(),
                                                   nn.Linear(12, 12), nn.ReLU(),
                                                   nn.Linear(12, 4))

        def forward(self, x):
            x = self.flatten(x)
            return self.linear_relu_stack(x)

    rng = np.random.default_rng(33)
    X = tt.from_numpy(rng.standard_normal((32, 4, 4)))
    y = tt.from_numpy(rng.integers(0, 4, 32))
    train_dataloader = tt.utils.data.DataLoader(tt.utils.data.TensorDataset(X, y), batch_size=8)
    test_dataloader = tt.utils.data.DataLoader(tt.utils.data.TensorDataset(X[:16], y[:16]),
                                               batch_size=16)
    loss_fn = nn.CrossEntropyLoss()
    accumulation_steps = 2

    def train_loop(dataloader, model, loss_fn, optimizer, scheduler=None, accumulate=False):
        model.train()
        losses = []
        for batch, (X, y) in enumerate(dataloader):
            pred = model(X)
            loss = loss_fn(pred, y)
            if accumulate:  # gradients of two batches make one step
                (loss / accumulation_steps).backward()
                if (batch + 1) % accumulation_steps == 0:
                    optimizer.step()
                    optimizer.zero_grad()
            else:
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
            if isinstance(scheduler, (lr_scheduler.OneCycleLR,
                                      lr_scheduler.CosineAnnealingWarmRestarts)):
                scheduler.step()
            losses.append(loss.item())
        return losses

    def test_loop(dataloader, model, loss_fn):
        model.eval()
        size = len(dataloader.dataset)
        num_batches = len(dataloader)
        test_loss, correct = 0, 0
        with tt.no_grad():
            for X, y in dataloader:
                pred = model(X)
                test_loss += loss_fn(pred, y).item()
                correct += (pred.argmax(1) == y).type(tt.float).sum().item()
        return test_loss / num_batches, correct / size

    recipes = [
        ("sgd", lambda p: tt.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
         lambda o: lr_scheduler.OneCycleLR(o, max_lr=0.5, total_steps=4 * steps + 1)),
        ("adam", lambda p: tt.optim.Adam(p, lr=0.01),
         lambda o: lr_scheduler.ReduceLROnPlateau(o, mode='min', factor=0.5, patience=0)),
        ("adamw", lambda p: tt.optim.AdamW(p, lr=0.01, weight_decay=0.1),
         lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2, eta_min=1e-4)),
        ("rmsprop", lambda p: tt.optim.RMSprop(p, lr=0.01, momentum=0.5), lambda o: None),
        ("adagrad_accum", lambda p: tt.optim.Adagrad(p, lr=0.1), lambda o: None),
    ]
    out, params = {}, {}
    for name, make_opt, make_sched in recipes:
        model = NeuralNetwork().double()
        _load(model, tt, state, name + ".")
        optimizer = make_opt(model.parameters())
        scheduler = make_sched(optimizer)
        losses, lrs, tests = [], [], []
        t = 0
        while t < steps:
            losses += train_loop(train_dataloader, model, loss_fn, optimizer, scheduler,
                                 accumulate=name.endswith("accum"))
            test_loss, correct = test_loop(test_dataloader, model, loss_fn)
            tests += [test_loss, correct]
            if isinstance(scheduler, lr_scheduler.ReduceLROnPlateau):
                scheduler.step(test_loss)
            lrs.append(optimizer.param_groups[0]['lr'])
            t += 1
            if interrupt == t:  # save a checkpoint, rebuild everything from it and go on
                buffer = io.BytesIO()
                tt.save({'epoch': t, 'model_state_dict': model.state_dict(),
                         'optimizer_state_dict': optimizer.state_dict(),
                         'scheduler_state_dict': None if scheduler is None
                         else scheduler.state_dict(), 'loss': losses[-1]}, buffer)
                buffer.seek(0)
                checkpoint = tt.load(buffer, weights_only=True)
                model = NeuralNetwork().double()
                model.load_state_dict(checkpoint['model_state_dict'])
                optimizer = make_opt(model.parameters())
                scheduler = make_sched(optimizer)  # before the optimizer's state: it sets lrs
                optimizer.load_state_dict(checkpoint['optimizer_state_dict'])
                if scheduler is not None:
                    scheduler.load_state_dict(checkpoint['scheduler_state_dict'])
                t = checkpoint['epoch']
                assert checkpoint['loss'] == losses[-1]
        out[name] = losses + tests + lrs
        params.update(_params(model, name + "."))
    return {**out, "params": params}


def test_optimizing_model_parameters_tutorial_runs_the_same():
    _parity(optimizing)


def test_optimizing_model_parameters_resumes_from_a_checkpoint_as_torch():
    _parity(optimizing, interrupt=2)


def test_optimizing_model_parameters_resumed_run_is_the_straight_run():
    start = optimizing(minidl, steps=0)["params"]
    straight = optimizing(minidl, state=start)
    resumed = optimizing(minidl, state=start, interrupt=2)
    for key in straight:
        if key != "params":
            np.testing.assert_array_equal(resumed[key], straight[key], err_msg=key)
    for k in straight["params"]:
        np.testing.assert_array_equal(resumed["params"][k], straight["params"][k], err_msg=k)


def test_optimizing_model_parameters_runs_in_minidl():
    out = optimizing(minidl, steps=3)
    assert all(np.isfinite(v).all() for k, v in out.items() if k != "params")


# ---- what the programs found, each fix with its own test ------------------------------------
def _gradcheck_keeps_grad(tt):
    x = tt.tensor([0.5, -1.0, 2.0], dtype=tt.float64, requires_grad=True)
    before = x.grad
    assert tt.autograd.gradcheck(lambda v: (v ** 3).sum(), (x,))
    untouched = x.grad is before
    x.grad = tt.full((3,), 7.0, dtype=tt.float64)  # a gradient the caller holds survives too
    assert tt.autograd.gradgradcheck(lambda v: (v ** 3).sum(), (x,))
    return untouched, x.grad.tolist()


def test_gradcheck_leaves_the_inputs_grad_alone():
    """gradcheck took its gradients by backward(): it cleared .grad, then left its own
    projected gradient there (the custom Function tutorial's later backward read the sum)."""
    assert _gradcheck_keeps_grad(minidl) == (True, [7.0, 7.0, 7.0])


def test_gradcheck_leaves_the_inputs_grad_alone_as_torch():
    torch = pytest.importorskip("torch")
    assert _gradcheck_keeps_grad(minidl) == _gradcheck_keeps_grad(torch)


def _jvp_only(tt, wrong=False):
    class Exp(tt.autograd.Function):
        @staticmethod
        def forward(ctx, foo):
            result = tt.exp(foo)
            ctx.result = result
            return result

        @staticmethod
        def jvp(ctx, gI):
            return gI * ctx.result * (2 if wrong else 1)

    class Two(tt.autograd.Function):  # two outputs, a non-Tensor argument between two inputs
        @staticmethod
        def forward(ctx, x, k, y):
            ctx.save_for_forward(x, y)
            ctx.k = k
            return x * y * k, x.sin()

        @staticmethod
        def jvp(ctx, tx, _, ty):
            x, y = ctx.saved_tensors
            return (tx * y + x * ty) * ctx.k, tx * x.cos()

    return Exp, Two


def _forward_ad_of_jvp_only(tt):
    fwAD = importlib.import_module(tt.__name__ + ".autograd.forward_ad")
    Exp, Two = _jvp_only(tt)
    x = tt.tensor([0.5, -1.0, 2.0], dtype=tt.float64)
    y = tt.tensor([1.5, 0.25, -3.0], dtype=tt.float64)
    tx = tt.tensor([1.0, 2.0, -1.0], dtype=tt.float64)
    ty = tt.tensor([0.5, 0.0, 4.0], dtype=tt.float64)
    with fwAD.dual_level():
        e = fwAD.unpack_dual(Exp.apply(fwAD.make_dual(x, tx))).tangent
        a, b = Two.apply(fwAD.make_dual(x, tx), 3.0, fwAD.make_dual(y, ty))
        ta, tb = fwAD.unpack_dual(a).tangent, fwAD.unpack_dual(b).tangent
    checks = [tt.autograd.gradcheck(Exp.apply, (x.clone().requires_grad_(),),
                                    check_forward_ad=True, check_backward_ad=False),
              tt.autograd.gradcheck(_jvp_only(tt, wrong=True)[0].apply,
                                    (x.clone().requires_grad_(),), check_forward_ad=True,
                                    check_backward_ad=False, raise_exception=False)]
    xr = x.clone().requires_grad_()
    with pytest.raises(NotImplementedError, match="backward or vjp method"):
        Exp.apply(xr).sum().backward()
    return [t.detach().numpy() for t in (e, ta, tb)], checks


def test_a_custom_function_with_only_jvp_runs_forward_mode():
    """The forward AD tutorial's Function defines jvp and no backward: minidl's forward AD
    (built on reverse mode) called the missing backward and raised NotImplementedError."""
    tangents, checks = _forward_ad_of_jvp_only(minidl)
    x, y = np.array([0.5, -1.0, 2.0]), np.array([1.5, 0.25, -3.0])
    tx, ty = np.array([1.0, 2.0, -1.0]), np.array([0.5, 0.0, 4.0])
    np.testing.assert_allclose(tangents[0], tx * np.exp(x))
    np.testing.assert_allclose(tangents[1], 3 * (tx * y + x * ty))
    np.testing.assert_allclose(tangents[2], tx * np.cos(x))
    assert checks == [True, False]
    # func.jvp too (torch's func transforms want setup_context-style functions; minidl's
    # take this one as well)
    _, j = minidl.func.jvp(_jvp_only(minidl)[0].apply, (minidl.from_numpy(x),),
                           (minidl.from_numpy(tx),))
    np.testing.assert_allclose(j.numpy(), tx * np.exp(x))


def test_a_custom_function_with_only_jvp_runs_forward_mode_as_torch():
    torch = pytest.importorskip("torch")
    ours, our_checks = _forward_ad_of_jvp_only(minidl)
    theirs, their_checks = _forward_ad_of_jvp_only(torch)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    assert our_checks == their_checks


def test_gradcheck_takes_torchs_mode_keywords():
    x = minidl.tensor([0.5, -1.0], dtype=minidl.float64, requires_grad=True)
    assert minidl.autograd.gradcheck(lambda v: v.sin() * v, (x,), check_forward_ad=True,
                                     check_undefined_grad=False, nondet_tol=0.0, fast_mode=True)
    with pytest.raises(ValueError, match="both False"):
        minidl.autograd.gradcheck(lambda v: v * 2, (x,), check_backward_ad=False)
    with pytest.raises(NotImplementedError, match="check_batched_grad"):
        minidl.autograd.gradcheck(lambda v: v * 2, (x,), check_batched_grad=True)


def _once_differentiable_twice(tt):
    once = importlib.import_module(tt.__name__ + ".autograd.function").once_differentiable

    class Square(tt.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        @once
        def backward(ctx, g):
            x, = ctx.saved_tensors
            return 2 * x * g

    x = tt.tensor([1.0, 2.0], dtype=tt.float64, requires_grad=True)
    v = tt.ones(2, dtype=tt.float64, requires_grad=True)
    g, = tt.autograd.grad(Square.apply(x), x, v, create_graph=True)
    with pytest.raises(RuntimeError) as info:
        g.sum().backward()
    return g.detach().numpy(), str(info.value)


def test_once_differentiable_refuses_in_torchs_words():
    got, message = _once_differentiable_twice(minidl)
    np.testing.assert_array_equal(got, [2.0, 4.0])
    assert message.startswith("trying to differentiate twice a function that was marked with "
                              "@once_differentiable") and "SquareBackward" in message


def test_once_differentiable_refuses_in_torchs_words_as_torch():
    torch = pytest.importorskip("torch")
    ours, theirs = _once_differentiable_twice(minidl), _once_differentiable_twice(torch)
    np.testing.assert_array_equal(ours[0], theirs[0])
    assert ours[1].startswith(theirs[1])


def _step_lr_periods(tt):
    out = {}
    for step_size in (1.0, 2.5, 0.5, 3):
        p = tt.nn.Parameter(tt.zeros(1))
        opt = tt.optim.SGD([p], lr=1.0)
        sched = tt.optim.lr_scheduler.StepLR(opt, step_size, gamma=0.5)
        lrs = []
        for _ in range(6):
            opt.step()
            sched.step()
            lrs.append(sched.get_last_lr()[0])
        out[step_size] = (lrs, repr(sched.state_dict()["step_size"]))
    return out


def test_step_lr_takes_a_float_step_size():
    """The text classification tutorial's StepLR(optimizer, 1.0, gamma=0.1) was refused."""
    out = _step_lr_periods(minidl)
    assert out[2.5] == ([1.0, 1.0, 1.0, 1.0, 0.5, 0.5], "2.5") and out[3][1] == "3"
    p = minidl.nn.Parameter(minidl.zeros(1))
    for bad in (0, -1.0, float("nan"), True, "1"):
        with pytest.raises(ValueError, match="step_size must be a number > 0"):
            minidl.optim.lr_scheduler.StepLR(minidl.optim.SGD([p], lr=1.0), bad)


def test_step_lr_takes_a_float_step_size_as_torch():
    torch = pytest.importorskip("torch")
    assert _step_lr_periods(minidl) == _step_lr_periods(torch)
