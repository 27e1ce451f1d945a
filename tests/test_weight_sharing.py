"""Weight sharing against known answers: k-means finds clear clusters, zeros stay zero, the centroid gradient is
the sum of its members' gradients, fine-tuning helps, and shared files load back exactly."""

import pytest
import torch

import prunelab as pl
from conftest import snapshot, same
from prunelab import weight_sharing as WS




@pytest.fixture(scope="module")
def lenet():
    return pl.load_pretrained("lenet300")


def clusters():
    """Four tight clusters around -2, -0.5, 1 and 3 (spread 0.01), 50 values each, shuffled into [20, 10]."""
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([-2.0, -0.5, 1.0, 3.0])
    w = (centres.repeat_interleave(50) + 0.01 * torch.randn(200, generator=g))
    perm = torch.randperm(200, generator=g)
    return w[perm].reshape(20, 10), torch.arange(4).repeat_interleave(50)[perm].reshape(20, 10), centres


@pytest.mark.parametrize("init", ["linear", "density"])   # random picks may start two centroids in one cluster
def test_kmeans_finds_clear_clusters(init):
    W, label, centres = clusters()
    C, idx = WS.kmeans_codebook(W, 2, init=init)
    assert C.shape == (4,) and idx.shape == W.shape and idx.dtype == torch.int64
    assert torch.allclose(C, centres, atol=0.01)
    assert torch.equal(idx, label)                             # C is sorted, so cluster k is centre k
    for k in range(4):
        assert C[k] == pytest.approx(float(W[idx == k].mean()), abs=1e-6)


def test_kmeans_is_deterministic_and_linear_init_spans_min_to_max():
    W = torch.randn(50, 40, generator=torch.Generator().manual_seed(1))
    a, b = WS.kmeans_codebook(W, 3, init="random", seed=3), WS.kmeans_codebook(W, 3, init="random", seed=3)
    assert torch.equal(a.centroids, b.centroids) and torch.equal(a.indices, b.indices)
    assert torch.equal(WS.initial_centroids(torch.tensor([-1.0, 0.2, 3.0]), 5), torch.tensor([-1.0, 0, 1, 2, 3]))


def test_pruned_zeros_are_not_clustered_and_stay_exact_zeros():
    W = clusters()[0].clone()
    W[::2] = 0                                                 # half the rows pruned
    C, idx = WS.kmeans_codebook(W, 2)
    assert C[0] == 0 and torch.equal(idx == 0, W == 0)
    assert torch.equal(C[idx][W == 0], torch.zeros(int((W == 0).sum())))
    assert C[1] == pytest.approx(-2.0, abs=0.02) and C[3] == pytest.approx(3.0, abs=0.02)   # 3 centroids left


def test_centroid_gradient_is_the_sum_of_member_gradients():
    grad_W = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    idx = torch.tensor([[0, 1, 0], [2, 1, 0]])
    assert WS.centroid_gradient(grad_W, idx, 4).tolist() == [1 + 3 + 6, 2 + 5, 4, 0]
    # and it is what autograd gives for W = C[idx]
    C = torch.tensor([0.5, -1.0, 2.0, 0.0], requires_grad=True)
    W = C[idx]
    W.retain_grad()
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    (W @ x).square().sum().backward()
    assert torch.allclose(C.grad, WS.centroid_gradient(W.grad, idx, 4))


def test_share_weights_copies_ties_weights_and_keeps_pruned_zeros(lenet):
    pruned = pl.masks.copy_model(lenet)
    pl.prune(pruned, 0.9)
    before = snapshot(pruned)
    shared, books = WS.share_weights(pruned, 3)
    assert same(before, snapshot(pruned)) and list(books) == ["fc1", "fc2", "fc3"]
    for name, book in books.items():
        W = shared.get_submodule(name).weight
        assert torch.equal(W, book.weights()) and W.unique().numel() <= 8
        assert torch.equal(W == 0, pruned.get_submodule(name).weight_mask == 0)
    with pytest.raises(ValueError, match="from 1 to 8"):
        WS.share_weights(pruned, 9)
    assert same(before, snapshot(pruned))


def test_fine_tuning_trains_only_centroids_and_helps(lenet, train_set, test_set):
    train, test = train_set.subset(8192), test_set.subset(2000)
    for bits, gain in [(1, 0.03), (2, 0.0)]:
        shared, books = WS.share_weights(lenet, bits)
        biases = {n: shared.get_submodule(n).bias.clone() for n in books}
        before = pl.evaluate(shared, test).accuracy
        tuned = WS.fine_tune_centroids(shared, books, train, epochs=1)
        assert pl.evaluate(shared, test).accuracy >= before + gain
        for name, book in tuned.items():
            assert torch.equal(book.indices, books[name].indices)
            assert not torch.equal(book.centroids, books[name].centroids)
            assert torch.equal(shared.get_submodule(name).weight, book.weights())
            assert torch.equal(shared.get_submodule(name).bias, biases[name])
        assert all(p.requires_grad and p.grad is None for p in shared.parameters())


def test_fine_tuning_a_pruned_model_keeps_zeros_and_the_zero_centroid(lenet, train_set):
    pruned = pl.masks.copy_model(lenet)
    pl.prune(pruned, 0.8)
    shared, books = WS.share_weights(pruned, 2)
    tuned = WS.fine_tune_centroids(shared, books, train_set.subset(1024), epochs=1)
    for name, book in tuned.items():
        assert book.centroids[0] == 0
        assert torch.equal(shared.get_submodule(name).weight == 0, pruned.get_submodule(name).weight_mask == 0)


def test_fine_tuning_refuses_codebooks_of_another_model(lenet, train_set):
    _, books = WS.share_weights(lenet, 2)
    with pytest.raises(ValueError, match="share_weights"):
        WS.fine_tune_centroids(lenet, books, train_set.subset(256))


def test_shared_file_round_trip_is_exact_and_small(lenet, tmp_path):
    pruned = pl.masks.copy_model(lenet)
    pl.prune(pruned, 0.5)
    shared, books = WS.share_weights(pruned, 4)
    path = WS.save_shared(shared, books, tmp_path / "s.pt")
    assert torch.load(path, weights_only=True)["shared"]["fc1.weight"]["codebook"].shape == (16,)
    loaded = WS.load_shared(path, pl.build_model("lenet300"))
    assert same(snapshot(loaded), pl.masks.effective_state_dict(shared))
    sizes = [WS.shared_file_bytes(*WS.share_weights(lenet, b, iters=5)) for b in (2, 4, 8)]
    assert sizes[0] < sizes[1] < sizes[2] < pl.metrics.file_bytes(lenet) / 3.8
