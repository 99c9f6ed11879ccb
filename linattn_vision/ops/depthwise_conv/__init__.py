from .op import depthwise_conv_tokens

__all__ = ['depthwise_conv_tokens']
