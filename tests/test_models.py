from __future__ import annotations

import json
from decimal import Decimal

import msgspec
import pytest
from conftest import spec_example

from shopline_async import (
    ImageInput,
    ImageUpdate,
    OptionInput,
    Product,
    ProductUpdate,
    ValidationError,
    VariantInput,
)
from shopline_async._codec import (
    coerce_update,
    decode_image,
    decode_product,
    encode_image_update,
    encode_product_update,
)
from shopline_async.models import normalise_money, validate


def paths(exc: pytest.ExceptionInfo[ValidationError]) -> list[str]:
    return exc.value.paths


# --- encoding --------------------------------------------------------------


def test_partial_update_sends_only_what_was_set() -> None:
    assert encode_product_update(ProductUpdate(title="x")) == b'{"product":{"title":"x"}}'
    assert encode_image_update(ImageUpdate(alt="a")) == b'{"image":{"alt":"a"}}'


def test_explicit_null_is_sent_only_when_asked() -> None:
    assert encode_product_update(ProductUpdate(vendor=None)) == b'{"product":{"vendor":null}}'
    assert json.loads(encode_product_update(ProductUpdate(variants=[VariantInput(sku="s", barcode=None)]))) == {
        "product": {"variants": [{"sku": "s", "barcode": None}]}
    }


# in the reference page's example request and in every response, but not among the request fields
PRODUCT_READ_ONLY = {
    "activated_at",
    "created_at",
    "id",
    "image",
    "product_behavior",
    "product_type",
    "published_at",
    "updated_at",
}
VARIANT_READ_ONLY = {"created_at", "inventory_item_id", "inventory_quantity", "product_id", "title", "updated_at"}


def test_every_documented_field_encodes() -> None:
    update = ProductUpdate(
        body_html="<p>d</p>",
        handle="h",
        images=[ImageInput(alt="a", id="1", src="https://img/x.png")],
        options=[OptionInput(name="Color", values_images={"red": "https://img/r.png"})],
        path="/products/clothes",
        product_category="Electronic",
        published_scope="web",
        spu="S1",
        status="active",
        subtitle="sub",
        tags=["a", "b"],
        template_path="templates/product.x.json",
        title="t",
        variants=[
            VariantInput(
                barcode="B",
                compare_at_price="129.99",
                id="18",
                image=ImageInput(id="5", src="https://img/v.png", alt="v"),
                inventory_policy="continue",
                inventory_tracker=False,
                option1="red",
                option2="xl",
                option3="cotton",
                option4="short",
                option5="casual",
                price=Decimal("90.22"),
                required_shipping=False,
                sku="S000000001",
                taxable=False,
                weight="0.23",
                weight_unit="zh_kg",
            )
        ],
        vendor="SHOPLINE",
    )
    body = json.loads(encode_product_update(update))["product"]
    assert set(body) == set(ProductUpdate.__struct_fields__) - PRODUCT_READ_ONLY
    assert set(body["variants"][0]) == set(VariantInput.__struct_fields__) - VARIANT_READ_ONLY
    assert body["variants"][0]["price"] == "90.22"
    assert body["tags"] == ["a", "b"]


def test_encoding_does_not_mutate_the_callers_object() -> None:
    variant = VariantInput(price=10)
    update = ProductUpdate(variants=[variant])
    assert json.loads(encode_product_update(update))["product"]["variants"][0]["price"] == "10.00"
    assert variant.price == 10


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        (Decimal("90.22"), "90.22"),
        (10, "10.00"),
        ("5", "5.00"),
        ("5.5", "5.50"),
        (19.99, "19.99"),
        ("0", "0.00"),
        ("1.500", "1.50"),
        # more places than two: sent as given, for the server to round as the reference says
        ("19.999", "19.999"),
        (Decimal("0.125"), "0.125"),
        (3.14159, "3.14159"),
        ("1.2300", "1.23"),
        (" 7.1 ", "7.10"),
        ("-0", "0.00"),  # zero, not "-0.00"
        (-0.0, "0.00"),
        # the page sets no maximum: wider than decimal's default 28 digits, kept exact
        ("123456789012345678901234567890.5", "123456789012345678901234567890.50"),
        (1e26, "100000000000000000000000000.00"),
    ],
)
def test_money_is_normalised_to_two_places(given: object, sent: str) -> None:
    assert normalise_money(given) == sent


@pytest.mark.parametrize(
    ("given", "rule"),
    [
        ("1e3", "decimal number such as 19.99"),
        ("1.5E-2", "decimal number such as 19.99"),
        ("\u0661.00", "decimal number such as 19.99"),
        ("-0.001", "negative"),
        (Decimal("NaN"), "finite"),
        (float("inf"), "finite"),
        ("-1", "negative"),
        ("abc", "decimal number"),
        (True, "decimal number"),
        ([1], "decimal number"),
    ],
)
def test_bad_money_is_refused_with_the_rule(given: object, rule: str) -> None:
    with pytest.raises(ValueError, match=rule):
        normalise_money(given)


def test_weight_must_be_positive() -> None:
    with pytest.raises(ValidationError) as exc:
        encode_product_update(ProductUpdate(variants=[VariantInput(weight=0)] * 4))
    assert paths(exc) == [f"$.product.variants[{i}].weight" for i in range(4)]
    assert "greater than 0" in str(exc.value)


# --- documented limits ------------------------------------------------------


LIMITS = [
    (ProductUpdate(title="x" * 256), "$.product.title", "at most 255 characters"),
    (ProductUpdate(handle="x" * 256), "$.product.handle", "at most 255"),
    (ProductUpdate(vendor="x" * 256), "$.product.vendor", "at most 255"),
    (ProductUpdate(product_category="x" * 256), "$.product.product_category", "at most 255"),
    (ProductUpdate(spu="x" * 256), "$.product.spu", "at most 255"),
    (ProductUpdate(subtitle="x" * 401), "$.product.subtitle", "at most 400"),
    (ProductUpdate(path="x" * 513), "$.product.path", "at most 512"),
    (ProductUpdate(body_html="é" * (256 * 1024 + 1)), "$.product.body_html", "at most 524288 bytes"),
    (ProductUpdate(tags=["t"] * 251), "$.product.tags", "at most 250 items"),
    (ProductUpdate(tags=["ok", "x" * 256]), "$.product.tags[1]", "at most 255"),
    (ProductUpdate(images=[ImageInput()] * 503), "$.product.images", "at most 502 items"),
    (ProductUpdate(images=[ImageInput(alt="x" * 513)]), "$.product.images[0].alt", "at most 512"),
    (ProductUpdate(images=[ImageInput(src="x" * 256)]), "$.product.images[0].src", "at most 255"),
    (ProductUpdate(images=[ImageInput(id="1" * 65)]), "$.product.images[0].id", "at most 64"),
    (ProductUpdate(options=[OptionInput()] * 6), "$.product.options", "at most 5 items"),
    (ProductUpdate(options=[OptionInput(name="x" * 256)]), "$.product.options[0].name", "at most 255"),
    (
        ProductUpdate(options=[OptionInput(values_images={"x" * 256: "u"})]),
        "$.product.options[0].values_images['" + "x" * 256 + "'] (key)",
        "at most 255",
    ),
    (ProductUpdate(variants=[VariantInput()] * 501), "$.product.variants", "at most 500 items"),
    (ProductUpdate(variants=[VariantInput(barcode="x" * 256)]), "$.product.variants[0].barcode", "at most 255"),
    (ProductUpdate(variants=[VariantInput(sku="x" * 256)]), "$.product.variants[0].sku", "at most 255"),
    (ProductUpdate(variants=[VariantInput(option5="x" * 256)]), "$.product.variants[0].option5", "at most 255"),
    (ProductUpdate(variants=[VariantInput(id="")]), "$.product.variants[0].id", "must not be empty"),
    (
        ProductUpdate(variants=[VariantInput(image=ImageInput(alt="x" * 513))]),
        "$.product.variants[0].image.alt",
        "at most 512",
    ),
    (ProductUpdate(status="live"), "$.product.status", "one of 'active', 'archived', 'draft'"),  # type: ignore[arg-type]
    (ProductUpdate(published_scope="pos"), "$.product.published_scope", "one of 'web'"),  # type: ignore[arg-type]
    (
        ProductUpdate(variants=[VariantInput(inventory_policy="maybe")]),  # type: ignore[arg-type]
        "$.product.variants[0].inventory_policy",
        "one of",
    ),
    (
        ProductUpdate(variants=[VariantInput(weight_unit="stone")]),  # type: ignore[arg-type]
        "$.product.variants[0].weight_unit",
        "one of",
    ),
    (ProductUpdate(variants=[VariantInput(taxable="yes")]), "$.product.variants[0].taxable", "true or false"),  # type: ignore[arg-type]
    (ProductUpdate(title=12), "$.product.title", "expected a string, got int"),  # type: ignore[arg-type]
    (ProductUpdate(variants=["x"]), "$.product.variants[0]", "expected VariantInput"),  # type: ignore[list-item]
    (ProductUpdate(tags="a,b"), "$.product.tags", "expected a list"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("update", "path", "rule"), LIMITS)
def test_each_documented_limit_names_its_path(update: ProductUpdate, path: str, rule: str) -> None:
    with pytest.raises(ValidationError) as exc:
        encode_product_update(update)
    assert paths(exc) == [path]
    assert rule in exc.value.errors[0].message
    assert path in str(exc.value)


def test_limits_at_the_boundary_pass() -> None:
    encode_product_update(
        ProductUpdate(
            title="x" * 255,
            subtitle="x" * 400,
            path="x" * 512,
            body_html="x" * 512 * 1024,
            tags=["x" * 255] * 250,
            images=[ImageInput(alt="x" * 512, src="x" * 255, id="1" * 64)] * 502,
            options=[OptionInput(name="x" * 255)] * 5,
            variants=[VariantInput(sku="x" * 255, weight="0.01")] * 500,
        )
    )


def test_html_is_measured_in_utf8_bytes() -> None:
    four_byte = "\U0001f600"
    encode_product_update(ProductUpdate(body_html=four_byte * (128 * 1024)))  # exactly 512 KB
    with pytest.raises(ValidationError, match="at most 524288 bytes in UTF-8, got 524289"):
        encode_product_update(ProductUpdate(body_html=four_byte * (128 * 1024) + "x"))
    with pytest.raises(ValidationError, match="got 524290"):
        encode_product_update(ProductUpdate(body_html="\u00e9" * (256 * 1024 + 1)))  # fewer characters than bytes


def test_values_json_would_disguise_are_refused() -> None:
    # JSON would send bytes as base64 text and a NaN as null: both must be refused, not sent
    with pytest.raises(ValidationError, match=r"\$\.product\.variants\[0\]\.sku: expected a string, got bytes"):
        encode_product_update(ProductUpdate(variants=[VariantInput(sku=b"abc")]))  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=r"\$\.image\.position: expected an integer, got float"):
        encode_image_update(ImageUpdate(position=float("nan")))  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=r"\$\.product\.title: expected a string, got float"):
        validate(ProductUpdate(title=float("inf")), "$.product")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=r"\$\.image\.position: must fit in 64 bits"):
        encode_image_update(ImageUpdate(position=10**30))


def test_image_update_limits() -> None:
    with pytest.raises(ValidationError) as exc:
        encode_image_update(ImageUpdate(alt="x" * 513, position=0, sku_id="1" * 65))
    assert paths(exc) == ["$.image.alt", "$.image.position", "$.image.sku_id"]
    with pytest.raises(ValidationError, match=r"\$\.image\.position: expected an integer, got bool"):
        encode_image_update(ImageUpdate(position=True))


def test_validation_error_lists_every_problem() -> None:
    with pytest.raises(ValidationError) as exc:
        encode_product_update(ProductUpdate(title="x" * 300, variants=[VariantInput(price="1e3", weight="-1")]))
    assert paths(exc) == ["$.product.title", "$.product.variants[0].price", "$.product.variants[0].weight"]
    assert str(exc.value).startswith("3 invalid values: $.product.title: must be at most 255 characters")


# --- mappings (what JSON input gives) --------------------------------------


def test_mapping_input_unknown_field_names_its_path() -> None:
    with pytest.raises(ValidationError) as exc:
        coerce_update({"title": "t", "variants": [{"prise": "1"}]}, ProductUpdate, "$.product")
    assert paths(exc) == ["$.product.variants[0]"]
    assert "unknown field `prise`" in str(exc.value)


def test_mapping_input_wrong_type_names_its_path() -> None:
    with pytest.raises(ValidationError) as exc:
        coerce_update({"variants": [{"taxable": "perhaps"}]}, ProductUpdate, "$.product")
    assert paths(exc) == ["$.product.variants[0].taxable"]


def test_mapping_input_is_lax_about_numeric_strings() -> None:
    # the API's own image example sends "position": "1"
    image = coerce_update(spec_example("image_request_example.json")["image"], ImageUpdate, "$.image")
    assert image.position == 1


# --- responses --------------------------------------------------------------


def test_spec_example_response_decodes_completely() -> None:
    raw = json.dumps(spec_example("product_response_example.json")).encode()
    product = decode_product(raw)
    assert product.id == "16069938731613985273252340"
    assert product.tags == ["tag1", "tag2"]
    assert product.tags_raw == "tag1,tag2"
    assert product.image is not None and product.image.id == "6993873159989240881"
    variant = product.variants[0]  # type: ignore[index]
    assert (variant.title, variant.price, variant.weight_unit, variant.inventory_quantity) == (
        "Red · L",
        "10.11",
        "kg",
        0,
    )
    assert variant.option3 is None
    assert product.options[1].values_images == {
        "L": "https://img.myshopline.com/image/official/e46e6189dd5641a3b179444cacdcdd2a.png"
    }  # type: ignore[index]
    # every documented field is a model field: nothing in the example is dropped
    assert set(spec_example("product_response_example.json")["product"]) <= {
        f.encode_name
        for f in msgspec.inspect.type_info(Product).fields  # type: ignore[union-attr]
    }


def test_image_response_example_decodes() -> None:
    image = decode_image(json.dumps(spec_example("image_response_example.json")).encode())
    assert (image.id, image.position, image.width, image.sku_id) == ("5976632123224980485", 1, 1024, None)


def test_responses_decode_leniently() -> None:
    product = decode_product(
        b'{"product":{"id":"1","status":"brand-new-status","unknown":{"x":1},"tags":null,'
        b'"variants":[{"inventory_quantity":"7","weight_unit":"stone","price":null}],"images":null}}'
    )
    assert product.status == "brand-new-status"
    assert product.tags == []
    assert product.variants[0].inventory_quantity == 7  # type: ignore[index]
    assert product.variants[0].weight_unit == "stone"  # type: ignore[index]


def test_tags_as_list_and_with_blanks() -> None:
    assert decode_product(b'{"product":{"tags":" a , b,,c "}}').tags == ["a", "b", "c"]
    assert decode_product(b'{"product":{"tags":["x","y"]}}').tags == ["x", "y"]


def test_a_plain_dict_reports_all_its_errors_as_a_model_does() -> None:
    update = {"title": 5, "status": "live", "variants": [{"sku": 1}, {"colour": "red"}], "nope": 1}
    with pytest.raises(ValidationError) as exc:
        encode_product_update(coerce_update(update, ProductUpdate, "$.product"))
    assert paths(exc) == [
        "$.product.title",
        "$.product.status",
        "$.product.variants[0].sku",
        "$.product.variants[1]",  # an unknown field is reported at its object, as msgspec does
        "$.product",
    ]


# --- round trips with the API's own data -------------------------------------


def test_the_reference_example_request_is_accepted_and_only_writable_fields_are_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    example = spec_example("product_request_example.json")["product"]
    with caplog.at_level("DEBUG", logger="shopline_async"):
        body = json.loads(encode_product_update(coerce_update(example, ProductUpdate, "$.product")))["product"]
    expected = {k: v for k, v in example.items() if k not in PRODUCT_READ_ONLY}
    expected["options"] = [{"name": o["name"], "values_images": o["values_images"]} for o in example["options"]]
    expected["variants"] = [{k: v for k, v in example["variants"][0].items() if k not in VARIANT_READ_ONLY}]
    assert body == expected
    (line,) = [r.getMessage() for r in caplog.records if "read-only" in r.getMessage()]
    assert line.startswith("20 read-only values not sent") and "$.product.created_at" in line
    assert "$.product.variants[].title" in line and "$.product.options[].id" in line


def test_read_only_fields_set_in_python_are_dropped_too() -> None:
    update = ProductUpdate(title="t", id="16", created_at="2024-01-01", variants=[VariantInput(title="Red", sku="s")])
    assert encode_product_update(update) == b'{"product":{"title":"t","variants":[{"sku":"s"}]}}'
    # and the rules still hold beside them: a read-only field hides no error
    with pytest.raises(ValidationError) as exc:
        encode_product_update(ProductUpdate(id="16", title="x" * 256))
    assert paths(exc) == ["$.product.title"]


def test_from_product_round_trips_what_the_api_returned() -> None:
    returned = decode_product(json.dumps(spec_example("product_response_example.json")).encode())
    update = ProductUpdate.from_product(returned)
    body = json.loads(encode_product_update(update))["product"]
    assert body["tags"] == ["tag1", "tag2"]  # the API's "tag1,tag2", as the request wants it
    assert body["variants"][0]["id"] == "18069938731621367248362340" and body["variants"][0]["price"] == "10.11"
    assert body["variants"][0]["image"]["id"] == "7354715709157154478"
    assert body["options"][0] == {"name": "Color", "values_images": {"Red": returned.options[0].values_images["Red"]}}  # type: ignore[index]
    assert "template_path" not in body  # null in the answer: not sent, so a round trip clears nothing
    assert not set(body) & PRODUCT_READ_ONLY and not set(body["variants"][0]) & VARIANT_READ_ONLY
    assert ProductUpdate.from_product(Product()) == ProductUpdate()


def test_from_image_round_trips_what_the_api_returned() -> None:
    returned = decode_image(json.dumps(spec_example("image_response_example.json")).encode())
    update = ImageUpdate.from_image(returned)
    assert encode_image_update(update) == b'{"image":{"alt":"This is a image alt","position":1}}'


def test_the_reference_example_image_request_is_sent_as_the_api_reads_it() -> None:
    example = spec_example("image_request_example.json")["image"]  # "position": "1", a string
    assert encode_image_update(coerce_update(example, ImageUpdate, "$.image")) == (
        b'{"image":{"alt":"This is a image alt","position":1}}'
    )
