"""nn.Modules built on the attention ops."""
