import hashlib
import subprocess
import sys

import pytest
import torch
from torchvision import transforms

import prunelab as pl
from prunelab.data import MEAN, STD, DataFileError, read_idx

from conftest import REPO


SHAPES_DIGEST = "4459d83ddf83492679eca5001b00cd6d6ed4d88c24107b11e62badb9163c4b28"   # make_shapes(600, seed=0)


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_splits_have_the_documented_shapes_and_balanced_classes(train_set, test_set):
    assert train_set.images.shape == (55_000, 28, 28) and test_set.images.shape == (10_000, 28, 28)
    assert train_set.images.dtype == torch.uint8  # kept compact in memory
    assert train_set.labels.bincount().tolist() == [5500] * 10
    assert test_set.labels.bincount().tolist() == [1000] * 10
    assert train_set.classes == pl.CLASSES


def test_committed_files_match_their_checksums():
    raw = REPO / "data" / "FashionMNIST" / "raw"
    listed = dict(reversed(line.split()) for line in (raw / "SHA256SUMS").read_text().splitlines())
    gz_files = sorted(p.name for p in raw.glob("*.gz"))
    assert len(gz_files) == 4
    for name in gz_files:
        assert digest(raw / name) == listed[name], name


def test_the_files_read_as_torchvisions_dataset_class_reads_them(data_copy):
    from torchvision.datasets import FashionMNIST

    ours = pl.load_fashion_mnist("test", root=data_copy)
    theirs = FashionMNIST(str(data_copy), train=False, download=False)
    assert torch.equal(ours.images, theirs.data) and torch.equal(ours.labels, theirs.targets)
    assert ours.classes == tuple(theirs.classes)


def test_loading_the_data_does_not_import_torchvision():
    """torchvision's import costs a kernel about 160 MB; the lessons that do not need its models skip it."""
    code = ("import sys, prunelab as pl; pl.load_fashion_mnist('test'); pl.load_fashion_mnist('validation'); "
            "print('torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_a_truncated_idx_file_is_refused_with_what_is_wrong(tmp_path):
    good = pl.data_root() / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte"
    bad = tmp_path / "labels"
    bad.write_bytes(good.read_bytes()[:-1])
    with pytest.raises(DataFileError, match="does not hold the 10000 bytes of its shape \\[10000\\]"):
        read_idx(bad)
    bad.write_bytes(b"PK\x03\x04" + good.read_bytes()[4:])
    with pytest.raises(DataFileError, match="not an IDX file of unsigned bytes"):
        read_idx(bad)
    assert torch.equal(read_idx(good), pl.load_fashion_mnist("test").labels.to(torch.uint8))


def test_corrupt_file_is_named_with_the_fix_and_nothing_is_written(data_copy):
    raw = data_copy / "FashionMNIST" / "raw"
    bad = raw / "t10k-images-idx3-ubyte.gz"
    data = bytearray(bad.read_bytes())
    data[1000] ^= 0xFF
    bad.write_bytes(data)
    before = {p.name: digest(p) for p in raw.iterdir()}
    with pytest.raises(DataFileError, match="t10k-images-idx3-ubyte.gz is corrupt") as err:
        pl.load_fashion_mnist("test", root=data_copy)
    assert "git checkout --" in str(err.value) and "dataset-fashion-mnist" in str(err.value)
    assert {p.name: digest(p) for p in raw.iterdir()} == before  # nothing unpacked, nothing changed


def test_missing_file_is_named(data_copy):
    (data_copy / "FashionMNIST" / "raw" / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataFileError, match="train-labels-idx1-ubyte.gz is missing"):
        pl.load_fashion_mnist("train", root=data_copy)


def test_wrong_root_says_which_layout_is_expected(tmp_path):
    with pytest.raises(DataFileError, match="No Fashion-MNIST folder at .*PRUNELAB_DATA"):
        pl.load_fashion_mnist("test", root=tmp_path / "elsewhere")
    assert not (tmp_path / "elsewhere").exists()


def test_damaged_unpacked_file_is_unpacked_again(data_copy, test_set):
    pl.load_fashion_mnist("test", root=data_copy)
    unpacked = data_copy / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte"
    unpacked.write_bytes(unpacked.read_bytes()[:-100])
    reloaded = pl.load_fashion_mnist("test", root=data_copy)
    assert torch.equal(reloaded.images, test_set.images)


def test_prunelab_data_variable_moves_the_data_root(data_copy, monkeypatch):
    monkeypatch.setenv("PRUNELAB_DATA", str(data_copy))
    assert pl.data_root() == data_copy
    assert len(pl.load_fashion_mnist("test")) == 10_000


def test_unknown_split_is_rejected():
    with pytest.raises(ValueError, match="split must be one of 'train', 'validation', 'test'"):
        pl.load_fashion_mnist("val")


def test_validation_is_carved_from_the_training_files_by_a_fixed_rule(train_set):
    validation = pl.load_fashion_mnist("validation")
    assert len(train_set) == 55_000 and len(validation) == 5_000
    assert torch.bincount(validation.labels).tolist() == [500] * 10
    # together they are the 60,000 training images, each exactly once, in a rule-given (not random) order
    from torchvision.datasets import FashionMNIST

    files = FashionMNIST(str(pl.data_root()), train=True, download=False)
    held_out = pl.validation_indices(files.targets)
    assert torch.equal(validation.images, files.data[held_out])
    rest = torch.ones(len(files.targets), dtype=torch.bool)
    rest[held_out] = False
    assert torch.equal(train_set.images, files.data[rest])
    for c in range(10):  # the last 500 of each class in file order
        where = (files.targets == c).nonzero().flatten()
        assert torch.equal(held_out[files.targets[held_out] == c], where[-500:])


def test_validation_indices_need_enough_images_per_class():
    with pytest.raises(ValueError, match="class 1 has only 2 images"):
        pl.validation_indices(torch.tensor([0, 0, 0, 1, 1]), per_class=3)


def test_normalisation_matches_torchvisions_transforms(test_set):
    tutorial = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])
    from PIL import Image

    expected = torch.stack([tutorial(Image.fromarray(test_set.images[i].numpy(), mode="L")) for i in range(5)])
    x, _ = next(test_set.batches(5))
    torch.testing.assert_close(x, expected)
    torch.testing.assert_close(test_set.normalized()[:5], expected)


def test_batches_cover_every_image_once_in_a_seeded_order(test_set):
    def labels_in_order(seed):
        g = torch.Generator().manual_seed(seed)
        return torch.cat([y for _, y in test_set.batches(384, shuffle=True, generator=g)])

    sizes = [len(y) for _, y in test_set.batches(384)]
    assert sizes[:-1] == [384] * 26 and sizes[-1] == 10_000 - 26 * 384
    a, b, c = labels_in_order(0), labels_in_order(0), labels_in_order(1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.bincount().tolist() == [1000] * 10
    with pytest.raises(ValueError, match="batch_size"):
        next(test_set.batches(0))


def test_subset_is_reproducible_and_checked(test_set):
    a, b = test_set.subset(500, seed=3), test_set.subset(500, seed=3)
    assert len(a) == 500 and torch.equal(a.images, b.images)
    assert not torch.equal(a.images, test_set.subset(500, seed=4).images)
    with pytest.raises(ValueError, match="between 1 and 10000"):
        test_set.subset(20_000)


def test_cached_images_serve_gradients_after_an_evaluation():
    data = pl.load_fashion_mnist("test").subset(64)  # a fresh ImageSet: its cache starts empty
    model = pl.build_model("lenet300")
    pl.evaluate(model, data)  # fills the cache under inference_mode
    loss = torch.nn.functional.cross_entropy(model(data.normalized()), data.labels)
    loss.backward()
    assert model.fc1.weight.grad is not None


def test_splits_are_named_for_labels(test_set):
    validation = pl.load_fashion_mnist("validation")
    assert (test_set.name, validation.name) == ("test", "validation")
    assert validation.subset(100).accuracy_label() == "validation accuracy"
    assert validation.images_label() == "5,000 validation images" and test_set.images_label(10) == "10 test images"
    unnamed = pl.ImageSet(test_set.images[:3], test_set.labels[:3])
    assert unnamed.accuracy_label() == "accuracy" and unnamed.images_label() == "3 images"
    assert repr(validation) == "ImageSet('validation', 5000 images of [28, 28], 10 classes)"


# ---------------------------------------------------------------- your own data, in the forms people have it

def test_own_colour_images_are_normalised_per_channel_with_their_own_statistics():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8, generator=g)
    images[:, 0] //= 4                                              # channels with different statistics
    mean, std = pl.data.channel_stats(images)
    data = pl.ImageSet(images, torch.arange(64) % 5, mean=mean, std=std)
    x = data.normalized()
    assert x.shape == (64, 3, 8, 8) and data.input_shape == (1, 3, 8, 8)
    assert torch.allclose(x.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(x.std((0, 2, 3)), torch.ones(3), atol=1e-4)
    assert data.classes == ("0", "1", "2", "3", "4")
    assert torch.equal(data.subset(10).normalized(), data.normalize(data.subset(10).images))   # keeps mean, std
    expected = (images[:, 1].float() / 255 - mean[1]) / std[1]
    assert torch.allclose(x[:, 1], expected, atol=1e-6)


def test_a_pair_a_dataset_and_a_loader_become_the_same_image_set(test_set):
    import numpy as np
    from torch.utils.data import DataLoader, TensorDataset

    part = test_set.subset(100, seed=3)
    forms = {"pair": (part.images, part.labels), "numpy pair": (part.images.numpy(), part.labels.numpy()),
             "dataset": TensorDataset(part.images, part.labels),
             "loader": DataLoader(TensorDataset(part.images, part.labels), batch_size=32)}
    for form, data in forms.items():
        got = pl.data.as_image_set(data)
        assert torch.equal(got.normalized(), part.normalized()), form
        assert torch.equal(got.labels, part.labels) and got.classes == pl.CLASSES, form
    assert pl.data.as_image_set(part) is part
    floats = pl.data.as_image_set((part.normalized(), part.labels))    # already normalised: used as given
    assert torch.equal(floats.normalized(), part.normalized())
    assert isinstance(np.asarray(part.labels), np.ndarray)


def test_a_torchvision_dataset_of_pil_images_is_read_as_pixels(test_set):
    from PIL import Image

    class Pictures(torch.utils.data.Dataset):
        classes = pl.CLASSES

        def __len__(self):
            return 5

        def __getitem__(self, i):
            return Image.fromarray(test_set.images[i].numpy()), int(test_set.labels[i])

    got = pl.data.as_image_set(Pictures())
    assert got.images.shape == (5, 1, 28, 28) and torch.equal(got.images[:, 0], test_set.images[:5])
    assert torch.equal(got.normalized(), test_set.normalized()[:5])


@pytest.mark.parametrize("data, error, message", [
    ((torch.zeros(4, 28, 28, dtype=torch.uint8), torch.zeros(3, dtype=torch.long)), ValueError,
     r"labels must be integers, one per image: shape \[4\], got torch.int64 \[3\]"),
    ((torch.zeros(4, 28, 28, dtype=torch.uint8), torch.zeros(4)), ValueError, r"labels must be integers"),
    ((torch.zeros(4, 28, 28, dtype=torch.int32), torch.zeros(4, dtype=torch.long)), ValueError,
     r"uint8 \[N, H, W\] or \[N, C, H, W\], or floating point"),
    ((torch.zeros(4, 28, 28, dtype=torch.uint8), -torch.ones(4, dtype=torch.long)), ValueError, "class indices"),
    (torch.utils.data.TensorDataset(torch.zeros(3, 4)), TypeError, r"\(image, label\) pairs"),
    (torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(0, 1, 2, 2), torch.zeros(0)),
                                 batch_size=4), ValueError, "no batches"),
    ({"x": 1}, TypeError, r"needs images with labels.*got a dict"),
])
def test_data_that_cannot_be_images_with_labels_says_what_is_wrong(data, error, message):
    with pytest.raises(error, match=message):
        pl.data.as_image_set(data, "evaluate")


def test_mean_and_std_must_fit_the_channels():
    images = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    with pytest.raises(ValueError, match="mean has 2 values for images with 3 channels"):
        pl.ImageSet(images, torch.zeros(2, dtype=torch.long), mean=(0.5, 0.5), std=0.2)
    with pytest.raises(ValueError, match="std must be positive"):
        pl.ImageSet(images, torch.zeros(2, dtype=torch.long), mean=0.5, std=0.0)


def test_train_evaluate_and_prune_take_a_loader_like_the_image_set(train_set, test_set):
    from torch.utils.data import DataLoader, TensorDataset

    part, check = train_set.subset(512, seed=1), test_set.subset(256, seed=2)
    loader = DataLoader(TensorDataset(part.images, part.labels), batch_size=100)
    a, b = pl.build_model("lenet300"), pl.build_model("lenet300")
    pl.train(a, part, epochs=1, progress=False, seed=4, device="cpu")
    pl.train(b, loader, epochs=1, progress=False, seed=4, device="cpu")
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert pl.evaluate(a, (check.images, check.labels)) == pl.evaluate(a, check)
    masks_a = pl.prune(a, 0.5, criterion="taylor", data=check)
    masks_b = pl.prune(b, 0.5, criterion="taylor", data=(check.images.numpy(), check.labels.numpy()))
    assert all(torch.equal(masks_a[k], masks_b[k]) for k in masks_a)


def test_generated_shapes_are_the_same_on_every_cpu_and_balanced():
    data = pl.data.make_shapes(600, seed=0)
    # the digest was taken on an AVX-512 machine; CI checks it on others (and .ci/run's AVX2 pass uses it)
    assert hashlib.sha256(data.images.numpy().tobytes()).hexdigest() == SHAPES_DIGEST
    assert data.images.shape == (600, 3, 32, 32) and data.classes == pl.data.SHAPES
    assert data.labels.bincount().tolist() == [100] * 6
    assert not torch.equal(pl.data.make_shapes(600, seed=1).images, data.images)
    x = data.normalized()
    assert torch.allclose(x.mean((0, 2, 3)), torch.zeros(3), atol=1e-4)      # its own statistics by default
    test = pl.data.make_shapes(60, seed=9, mean=data.mean, std=data.std)
    assert test.mean == data.mean and test.std == data.std


def test_the_shapes_differ_by_class_where_a_learner_can_see_it():
    data = pl.data.make_shapes(600, seed=0, noise=0.0)
    bright = (data.images.float().mean(1) > data.images.float().mean((1, 2, 3))[:, None, None]).float()
    area = bright.mean((1, 2))
    by_class = {name: area[data.labels == c].mean().item() for c, name in enumerate(data.classes)}
    assert by_class["bar"] < by_class["ring"] < by_class["disc"]   # thin < hollow < filled (same radius range)
