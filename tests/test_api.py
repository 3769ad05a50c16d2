"""The top-level Python API: every advertised name resolves."""

import understudy


def test_every_public_name_resolves():
    for name in understudy.__all__:
        assert getattr(understudy, name) is not None, name
    assert callable(understudy.fit) and callable(understudy.load_policy) and callable(understudy.make)
