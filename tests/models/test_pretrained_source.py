"""pretrained=True without a file names where the weights are (timm cannot download the official releases)."""
import pytest
import timm

import linattn_vision  # noqa: F401  (registers the models)

# one per skeleton and repository, and where each cfg says its weights are
WHERE = {
    'flatten_swin_t': 'see https://github.com/LeapLabTHU/FLatten-Transformer',
    'agent_swin_t': 'see https://github.com/LeapLabTHU/Agent-Attention',
    'flatten_pvt_t': 'see https://github.com/LeapLabTHU/FLatten-Transformer',
    'agent_pvt_m_256': 'https://cloud.tsinghua.edu.cn/f/654df734121643b19c52/?dl=1',
    'flatten_pvt_v2_b0': 'see https://github.com/LeapLabTHU/FLatten-Transformer',
    'agent_cswin_t': 'https://cloud.tsinghua.edu.cn/f/8c562a74441e46d5902b/?dl=1',
    'flatten_deit_t': 'no official FLatten-DeiT release',
}


@pytest.mark.parametrize('name', sorted(WHERE))
def test_pretrained_without_a_file_says_where_the_weights_are(name):
    """timm's own error ("No pretrained weights exist for ...") read as if no ImageNet weights existed."""
    with pytest.raises(RuntimeError) as error:
        timm.create_model(name, pretrained=True)
    message = str(error.value)
    assert message.startswith(f'{name}: no weights timm can download (') and WHERE[name] in message
    assert message.endswith(f"pass a file: timm.create_model('{name}', pretrained=True, "
                            f"pretrained_cfg_overlay=dict(file='/path/to/weights.pth'))")


def test_a_missing_pretrained_file_is_named(tmp_path):
    """timm raised a FileNotFoundError without a message."""
    missing = tmp_path / 'flatten_pvt_t.pth'
    with pytest.raises(FileNotFoundError, match=f'flatten_pvt_t: pretrained file not found: {missing}'):
        timm.create_model('flatten_pvt_t', pretrained=True, pretrained_cfg_overlay=dict(file=str(missing)))
