"""Safe by default: pickle checkpoints refused unless allowed; trust_remote_code off and recorded."""

from __future__ import annotations

import pytest

from adaptlab.errors import UserError
from adaptlab.models import load_kwargs, resolve_model


def test_pickle_only_model_folder_is_refused(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "bert"}')
    (folder / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(UserError, match="pickle"):
        resolve_model(str(folder))
    resolved = resolve_model(str(folder), allow_pickle=True)
    assert load_kwargs(resolved).get("use_safetensors") is not True


def test_defaults_are_safe(tiny_bert):
    kwargs = load_kwargs(resolve_model(tiny_bert))
    assert kwargs["trust_remote_code"] is False
    assert kwargs["use_safetensors"] is True


def test_config_defaults(tmp_path):
    from adaptlab.config import parse_ladder

    spec = parse_ladder({"name": "x", "data": {"path": "d.csv"}, "model": "minilm", "rungs": [{"method": "lora"}]})
    assert spec.trust_remote_code is False and spec.allow_pickle is False
