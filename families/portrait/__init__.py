"""The portrait-drawing family (see families/__init__.py for what each module holds)."""
