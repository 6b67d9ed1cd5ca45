"""Small training specs (and the cut-then-resume run) shared by the tests of both backends' trainers
(test_precision_jax.py, test_precision_torch.py, test_gan_backends.py), so
the two backends' tests train the same models."""

# A small CNN with every kind of layer the speed and precision settings touch:
# convolutions (4-D weights), BatchNorm (float32 statistics under mixed) and
# dropout. A format string: `.format(epochs=N)`.
SMALL_CNN = """
model m {{
    input [2, 12, 10]
    Conv2D(6, kernel=3, padding=same, activation=relu)
    MaxPool(2)
    Conv2D(4, kernel=3, padding=same, bias=false)
    BatchNorm()
    ReLU()
    MaxPool(2)
    Flatten()
    Dropout(0.2)
    Dense(16, activation=relu)
    Dense(5, activation=softmax)
}}
train m {{
    data      = synthetic(samples=512, classes=5, test_samples=64, validation_split=0.25)
    loss      = cross_entropy
    optimizer = adam(lr=1e-2)
    batch     = 32
    epochs    = {epochs}
    metrics   = [accuracy]
    seed      = 1
}}
"""

# A tiny GAN pair (latent 8, 8x8 images). Layers before a BatchNorm have no
# bias: its gradient is zero but for float noise, which Adam's m/sqrt(v)
# would blow up to the learning rate.
GAN_PAIR = """
model gen {
    input [8]
    Dense(4*4*8, bias=false)
    BatchNorm()
    LeakyReLU(0.2)
    Reshape([8, 4, 4])
    ConvTranspose2D(4, kernel=3, stride=2, padding=same, bias=false)
    BatchNorm()
    ReLU()
    ConvTranspose2D(1, kernel=3, padding=same, activation=tanh)
}
model disc {
    input [1, 8, 8]
    Conv2D(4, kernel=3, stride=2, padding=same, bias=false)
    BatchNorm()
    LeakyReLU(0.2)
    Flatten()
    Dense(1, activation=sigmoid)
}
"""


# MNIST (shipped with the package) on a small CNN, for the accuracy of a short
# mixed-precision run against f32. A format string: conv1, conv2 (filters), batch.
MNIST_CNN_OF = """
model cnn {{
    input [1, 28, 28]
    Conv2D({conv1}, kernel=3, padding=same, activation=relu)
    MaxPool(2)
    Conv2D({conv2}, kernel=3, padding=same)
    BatchNorm()
    ReLU()
    MaxPool(2)
    Flatten()
    Dense(32, activation=relu)
    Dense(10, activation=softmax)
}}
train cnn {{
    data      = mnist(validation_split=0.1)
    loss      = cross_entropy
    optimizer = adam(lr=3e-3)
    batch     = {batch}
    epochs    = 2
    metrics   = [accuracy]
    seed      = 0
}}
"""


def cut_and_resume(spec: str, out, backend: str, limit: int, **options):
    """`specc train` of `spec` interrupted after its first epoch (Ctrl-C in
    on_epoch_end), then resumed from that run directory: (the resumed
    RunResult, the epoch the cut run's checkpoint records)."""
    import json

    import pytest

    from specc.runner import Interrupted, Options, train_model

    def stop(epoch, row):
        if epoch == 0:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted, match="--resume"):
        train_model(spec, None, Options(backend=backend, quiet=True, out=str(out), limit=limit, **options),
                    on_epoch_end=stop)
    cut_epoch = json.loads((out / "checkpoint.json").read_text())["epoch"]
    return train_model(spec, None, Options(backend=backend, quiet=True, resume=str(out), **options)), cut_epoch
