import shopline_async
import shopline_async.mock
import shopline_async.models


def _isort_order(name: str) -> tuple[int, str]:
    """ruff's RUF022 order: CONSTANTS, then Classes, then the rest, each alphabetically."""
    kind = 0 if name.isupper() else 1 if name[:1].isupper() else 2
    return kind, name


def test_all_exports_exist_are_sorted_and_documented() -> None:
    for module in (shopline_async, shopline_async.mock, shopline_async.models):
        names = module.__all__
        assert len(set(names)) == len(names)
        assert names == sorted(names, key=_isort_order), f"{module.__name__}.__all__ is not sorted"
        for name in names:
            member = getattr(module, name)
            if name in ("UNSET", "__version__"):
                continue
            assert member.__doc__, f"{module.__name__}.{name} has no docstring"
