"""One epoch of LeNet-300-100 training, and one pass over the test set: prunelab vs the PyTorch tutorial.

The tutorial pipeline is the one of pytorch.org's quickstart: torchvision's FashionMNIST with
ToTensor (+ Normalize, so both sides see the same numbers) and a DataLoader with batch 64.
prunelab trains on in-memory uint8 tensors normalised per batch. Both use batch 64, SGD with
momentum, the CPU and the same data; the median of --repeats runs is reported.

Also printed: the "compute floor" (the same number of SGD steps on one fixed batch, so no data handling at
all), which bounds any pipeline's speed-up at this batch size, and prunelab at its default batch of 128.

    python benches/bench_train_epoch.py [--repeats 3]
"""

import argparse
import statistics
import time

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

import prunelab as pl
from prunelab.data import MEAN, STD


def tutorial_epoch(model, root, batch_size):
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])
    train_data = datasets.FashionMNIST(root, train=True, download=False, transform=transform)
    loader = DataLoader(train_data, batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    model.train()
    for x, y in loader:
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return time.perf_counter() - start


def tutorial_test(model, root, batch_size):
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])
    test_data = datasets.FashionMNIST(root, train=False, download=False, transform=transform)
    loader = DataLoader(test_data, batch_size=batch_size)
    start = time.perf_counter()
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum().item()
    return time.perf_counter() - start, correct / len(test_data)


def compute_floor(model, n_images, batch_size):
    """The same number of SGD steps on one fixed batch: the time no data pipeline can go below."""
    x, y = torch.randn(batch_size, 1, 28, 28), torch.randint(0, 10, (batch_size,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, fused=True)
    start = time.perf_counter()
    for _ in range(-(-n_images // batch_size)):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def kit_epoch(model, train_set, batch_size):
    start = time.perf_counter()
    pl.train(model, train_set, epochs=1, lr=0.05, batch_size=batch_size, device="cpu", progress=False)
    return time.perf_counter() - start


def kit_test(model, test_set):
    start = time.perf_counter()
    accuracy = pl.evaluate(model, test_set).accuracy
    return time.perf_counter() - start, accuracy


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    train_set, test_set = pl.load_fashion_mnist("train"), pl.load_fashion_mnist("test")  # verifies, unpacks
    root = str(pl.data_root())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
          f"{args.repeats} repeats")
    times = {"tutorial_epoch": [], "kit_epoch": [], "compute_floor": [], "kit_epoch_b128": [],
             "tutorial_test": [], "kit_test": []}
    for r in range(args.repeats):
        times["tutorial_epoch"].append(tutorial_epoch(pl.build_model("lenet300", seed=r), root, args.batch_size))
        times["kit_epoch"].append(kit_epoch(pl.build_model("lenet300", seed=r), train_set, args.batch_size))
        times["compute_floor"].append(compute_floor(pl.build_model("lenet300", seed=r), len(train_set),
                                                    args.batch_size))
        times["kit_epoch_b128"].append(kit_epoch(pl.build_model("lenet300", seed=r), train_set, 128))
        model = pl.load_pretrained("lenet300")
        seconds, tutorial_acc = tutorial_test(model, root, args.batch_size)
        times["tutorial_test"].append(seconds)
        seconds, kit_acc = kit_test(model, test_set)
        times["kit_test"].append(seconds)
        assert abs(tutorial_acc - kit_acc) < 1e-3, (tutorial_acc, kit_acc)  # same model, same answer
        print(f"repeat {r + 1}: " + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in times.items()))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"training epoch, batch {args.batch_size}: tutorial {med['tutorial_epoch']:.2f} s, "
          f"prunelab {med['kit_epoch']:.2f} s; the model's own steps alone take {med['compute_floor']:.2f} s")
    print(f"data pipeline time per epoch: tutorial {med['tutorial_epoch'] - med['compute_floor']:.2f} s, "
          f"prunelab {med['kit_epoch'] - med['compute_floor']:.2f} s")
    print(f"prunelab at its default batch 128: {med['kit_epoch_b128']:.2f} s per epoch")
    print(f"test-set pass:  tutorial {med['tutorial_test'] * 1000:.0f} ms, prunelab {med['kit_test'] * 1000:.0f} ms")
    print(f"RESULT tutorial_train_epoch={med['tutorial_epoch']:.2f} unit=s target=reference")
    print(f"RESULT kit_train_epoch={med['kit_epoch']:.2f} unit=s target=reference")
    print(f"RESULT tutorial_test_pass={med['tutorial_test'] * 1000:.0f} unit=ms target=reference")
    print(f"RESULT kit_test_pass={med['kit_test'] * 1000:.0f} unit=ms target=reference")
    print(f"RESULT compute_floor_epoch={med['compute_floor']:.2f} unit=s target=reference")
    print(f"RESULT kit_train_epoch_batch128={med['kit_epoch_b128']:.2f} unit=s target=reference")
    print(f"RESULT train_epoch_speedup_batch128={med['tutorial_epoch'] / med['kit_epoch_b128']:.1f} "
          f"unit=x target=reference")
    print(f"RESULT train_epoch_speedup={med['tutorial_epoch'] / med['kit_epoch']:.1f} unit=x target=>=5")


if __name__ == "__main__":
    main()
