import shopline_async
import shopline_async.mock


def test_all_exports_exist_are_sorted_and_documented() -> None:
    for module in (shopline_async, shopline_async.mock, shopline_async.models):
        names = module.__all__
        assert len(set(names)) == len(names)  # the order is ruff's (RUF022) business
        for name in names:
            member = getattr(module, name)
            if name in ("UNSET", "__version__"):
                continue
            assert member.__doc__, f"{module.__name__}.{name} has no docstring"
