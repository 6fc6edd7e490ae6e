"""Checked by mypy (see pyproject.toml), never run: what a type checker sees of a batch's results."""

from __future__ import annotations

from typing_extensions import assert_type

from shopline_async import (
    BatchExecutor,
    BatchReport,
    Product,
    ProductImage,
    Result,
    UpdateImage,
    UpdateProduct,
)


async def results_are_typed_by_input(
    executor: BatchExecutor, products: list[UpdateProduct], images: list[UpdateImage]
) -> Result[Product | ProductImage]:
    async with executor.stream(products) as stream:
        async for result in stream:
            assert_type(result, Result[Product])
            assert_type(result.data, Product | None)
    async with executor.stream(images) as stream_images:
        async for image_result in stream_images:
            assert_type(image_result.data, ProductImage | None)
    mixed: list[UpdateProduct | UpdateImage] = [*products, *images]
    async with executor.stream(mixed) as stream_mixed:
        async for any_result in stream_mixed:
            assert_type(any_result.data, Product | ProductImage | None)

    report = await executor.gather(products)
    assert_type(report, BatchReport[Product])
    assert_type(report.results[0].data, Product | None)
    assert_type((await executor.gather(images)).results[0].data, ProductImage | None)
    return report.results[0]  # a product's result is a result: Result is covariant
