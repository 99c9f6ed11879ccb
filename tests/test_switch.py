"""The process-wide switches (force the exact attention path, turn the fused LayerNorm off)."""
import pytest

from linattn_vision._switch import Switch
from linattn_vision.layers import fused_layer_norm, norm


def test_switch_reads_its_environment_variable(monkeypatch):
    monkeypatch.delenv('LINATTN_TEST_SWITCH', raising=False)
    assert Switch('LINATTN_TEST_SWITCH', default_on=True).on
    assert not Switch('LINATTN_TEST_SWITCH', default_on=False).on
    monkeypatch.setenv('LINATTN_TEST_SWITCH', '0')
    assert not Switch('LINATTN_TEST_SWITCH', default_on=True).on
    monkeypatch.setenv('LINATTN_TEST_SWITCH', '1')
    assert Switch('LINATTN_TEST_SWITCH', default_on=False).on


def test_switch_block_restores_the_setting_even_on_error():
    switch = Switch('LINATTN_TEST_SWITCH_UNSET', default_on=True)
    with switch.set(False):
        assert not switch.on
        with switch.set(True):
            assert switch.on
        assert not switch.on
    assert switch.on
    with pytest.raises(RuntimeError), switch.set(False):
        raise RuntimeError('inside the block')
    assert switch.on


def test_fused_layer_norm_block_drives_the_modules_switch():
    assert norm._FUSED.on  # the default, unless LINATTN_FUSED_LAYER_NORM=0
    with fused_layer_norm(False):
        assert not norm._FUSED.on
    assert norm._FUSED.on
