"""A tiny preset record (TOML) shared by the preset and calibration tests: smoke-sized, seconds to run."""

TINY_RECORD = """
source = "digits"
model = "mlp"
forget = "groups:3"
n_models = 3
max_train = 400
[recipe]
epochs = 2
lr = 3e-3
[model_kwargs]
hidden = [16]
"""
