"""Process-wide on/off settings that an environment variable starts and a `with` block changes."""
import contextlib
import os


class Switch:
    """On unless its environment variable is '0' (default_on) / on only if it is '1' (not default_on), read once at
    import; ``with switch.set(False):`` changes it for a block. Its ``on`` is a plain attribute, so torch.compile
    reads it like a global (and guards on it) instead of breaking the graph."""

    def __init__(self, env: str, default_on: bool):
        value = os.environ.get(env)
        self.on = value != '0' if default_on else value == '1'

    @contextlib.contextmanager
    def set(self, on: bool = True):
        previous, self.on = self.on, on
        try:
            yield
        finally:
            self.on = previous
