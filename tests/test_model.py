"Checkpoint-style round trips of `CNNAutoencoder` through plain data only."
import json

import pytest
import torch

from ae_nb.config import AEConfig, validate_configuration
from ae_nb.model import CNNAutoencoder, model_from_config, tiny_autoencoder


@pytest.mark.parametrize('shape,model_cfg', [
    ((1, 8, 8), {}),
    ((1, 37, 101), {'strides': [[1, 2], [2, 2]], 'norm': 'group', 'activation': 'silu'}),
    ((3, 20, 9), {'channels': [4, 8, 8], 'strides': [2, [2, 1], 1], 'output_activation': 'none'}),
])
def test_save_load_weights_only_rebuilds_same_function(tmp_path, shape, model_cfg):
    torch.manual_seed(0)
    model = model_from_config(validate_configuration({'model': model_cfg}).model, shape)
    x = torch.rand(4, *shape)
    model.train()
    for _ in range(2): model(x)  # move batch-norm running statistics away from their initial values
    model.eval()
    path = tmp_path / 'model.pth'
    torch.save({'model': model.state_dict(), 'model_hparams': model.hparams}, path)
    ckpt = torch.load(path, weights_only=True)
    rebuilt = CNNAutoencoder(**ckpt['model_hparams'])
    rebuilt.load_state_dict(ckpt['model'])
    rebuilt.eval()
    assert rebuilt.hparams == model.hparams
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
        assert torch.equal(rebuilt.encode(x), model.encode(x))


def test_hparams_are_json_data():
    model = CNNAutoencoder(2, (12, 40), strides=[[1, 2], 2], channels=[4, 8])
    assert CNNAutoencoder(**json.loads(json.dumps(model.hparams))).hparams == model.hparams


def test_every_parameter_gets_a_gradient():
    model = tiny_autoencoder((2, 11, 13), embedding_dim=3)
    x = torch.rand(3, 2, 11, 13)
    torch.nn.functional.mse_loss(model(x), x).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing


def test_mismatched_state_dict_is_refused():
    small, other = tiny_autoencoder((1, 16, 16)), tiny_autoencoder((1, 8, 8))
    with pytest.raises(RuntimeError, match='size mismatch'):
        other.load_state_dict(small.state_dict())


def test_default_config_on_digits_shape():
    model = model_from_config(AEConfig().model, (1, 8, 8))
    assert model.sizes == [(8, 8), (4, 4), (2, 2)]
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 1, 8, 8)
