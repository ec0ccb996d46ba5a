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


def _parity(script, atol=1e-10, rtol=1e-8, loss_rtol=1e-9, loss_atol=1e-12, **kw):
    """Run ``script`` in torch (its initial weights), then both from those weights; compare."""
    if torch is None:
        pytest.skip("torch not installed: these tests run one script in torch and in minidl")
    torch.manual_seed(0)
    start = script(torch, **{**kw, "steps": 0})["params"]
    theirs = script(torch, state=start, **kw)
    ours = script(minidl, state=start, **kw)
    for key in theirs:
        if key == "params":
            continue
        if isinstance(theirs[key], str):  # a repr of facts that must match exactly
            assert ours[key] == theirs[key], key
            continue
        np.testing.assert_allclose(ours[key], theirs[key], rtol=loss_rtol, atol=loss_atol,
                                   err_msg=key)
    assert set(ours["params"]) == set(theirs["params"])
    for k in theirs["params"]:
        assert ours["params"][k].dtype == theirs["params"][k].dtype, k
        np.testing.assert_allclose(ours["params"][k], theirs["params"][k], rtol=rtol, atol=atol,
                                   err_msg=k)
    return ours


def _load(model, tt, state, prefix=""):
    if state is not None:
        model.load_state_dict({k[len(prefix):]: tt.from_numpy(v.copy()) for k, v in state.items()
                               if k.startswith(prefix)})


def _params(model, prefix=""):
    return {prefix + k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def _np(t):
    return t.detach().cpu().numpy().copy()


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
