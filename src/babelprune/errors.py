"""The one exception type users see.

Every error caused by bad input (a wrong model name, an unknown language, a
sparsity out of range...) is raised as `BabelpruneError` with one sentence
that says what was wrong and what to do. The CLI prints that sentence and
exits with status 2, without a traceback.
"""


class BabelpruneError(Exception):
    """A user-facing error: one sentence naming what was wrong and what to do."""
