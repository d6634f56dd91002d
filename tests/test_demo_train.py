"""VAR/train_demo.py: a few optimisation steps of each stage run and lower the loss."""
import torch

from VAR import demo
from VAR.train_demo import encode_dataset, train_classifier, train_var, train_vae


def _mean(xs):
    return sum(xs) / len(xs)


def test_vqvae_steps_lower_the_loss():
    images, _ = demo.load_digits_images()
    vae, _ = demo.build_demo("cpu", seed=0, test_mode=False)
    losses = train_vae(vae, images[:64], steps=12, batch_size=8, lr=3e-3, seed=0, restart_every=6, warmup=1,
                       progress=False)
    assert len(losses) == 12
    assert _mean(losses[-4:]) < 0.75 * _mean(losses[:4]), losses  # measured ratio 0.57
    assert not vae.training and not any(p.requires_grad for p in vae.parameters())


def test_var_steps_lower_the_loss_and_use_label_dropout():
    images, labels = demo.load_digits_images()
    vae, var = demo.build_demo("cpu", seed=0, test_mode=False)
    vae.eval().requires_grad_(False)
    tokens, tok_labels = encode_dataset(vae, images[:64], labels[:64], copies=0, seed=0)
    assert [t.shape for t in tokens] == [(64, p * p) for p in demo.PATCH_NUMS]
    assert var.cond_drop_rate == 0.1  # classifier-free guidance needs the null class in training
    losses = train_var(vae, var, tokens, tok_labels, steps=10, batch_size=16, lr=3e-3, seed=0, warmup=1,
                       progress=False)
    assert losses[0] > 4.0  # about ln(256) = 5.55 at init
    assert _mean(losses[-3:]) < _mean(losses[:3]) - 0.8, losses  # measured drop 1.28


def test_training_is_reproducible_from_the_seed():
    images, labels = demo.load_digits_images()
    runs = []
    for _ in range(2):
        clf_losses = train_classifier(images[:80], labels[:80], epochs=1, batch_size=16, seed=3, progress=False)[2]
        vae, var = demo.build_demo("cpu", seed=3, test_mode=False)
        vae_losses = train_vae(vae, images[:16], steps=2, batch_size=8, seed=3, progress=False)
        tokens, tok_labels = encode_dataset(vae, images[:16], labels[:16], copies=1, seed=3)
        var_losses = train_var(vae, var, tokens, tok_labels, steps=2, batch_size=8, seed=3, progress=False)
        runs.append((clf_losses, vae_losses, var_losses, var.state_dict()["head.weight"].clone()))
    assert runs[0][:3] == runs[1][:3]
    assert torch.equal(runs[0][3], runs[1][3])
