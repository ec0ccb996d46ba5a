"""Train LeNet-5 on MNIST in a few lines of minidl's public API (a tutorial, not a tool).

    python examples/train_lenet5.py            # full MNIST if found ($MINIDL_DATA), else the sample
"""
import minidl
import minidl.nn.functional as F
from minidl.data import DataLoader
from minidl.datasets import MNIST, MNISTNotFound
from minidl.models import lenet5

minidl.manual_seed(0)
try:
    train, test = MNIST(train=True, download=False), MNIST(train=False, download=False)
except MNISTNotFound:
    train, test = MNIST.sample(train=True), MNIST.sample(train=False)
model = lenet5()
opt = minidl.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)

for epoch in range(2):
    for x, y in DataLoader(train, batch_size=64, shuffle=True, seed=epoch):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with minidl.no_grad():
        correct = sum(int((model(x).argmax(dim=1) == y).numpy().sum())
                      for x, y in DataLoader(test, batch_size=1000))
    model.train()
    print(f"epoch {epoch + 1}: loss {loss.item():.4f}, test accuracy {correct / len(test):.4f}")
