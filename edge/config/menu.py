"""The menu file (`menu: menu.yaml` in the station config, CONTRACT section 8): what the
restaurant sells, at what price, and how many portions it starts with.

    currency: TRY
    products:
      - {id: adana, name: Adana kebap, category: grill, price: 42000, stock: 12}
      - {id: ayran, name: Ayran, category: drinks, price: 6000}          # not counted
      - {id: baklava, name: Baklava, category: desserts, price: 15000, listed: false}

Prices are in minor units (kuruş, cents). `stock` is the portions left, absent or null for
"not counted"; `listed: false` takes a product off the menu. The file is read and checked
like the station config: every problem with its file, line and key path. What the file says
about stock is where counting starts: the daemon keeps the running counts in its database,
and a reload keeps them unless the file's own figure for that product changed.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

PRODUCT_ID = r"^[A-Za-z0-9._-]{1,64}$"
ProductId = Annotated[str, Field(pattern=PRODUCT_ID)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Product(_Strict):
    id: ProductId
    name: Annotated[str, Field(min_length=1, max_length=128)]
    category: Annotated[str, Field(min_length=1, max_length=64)]
    price: Annotated[int, Field(ge=0, strict=True)]
    stock: Annotated[int, Field(ge=0, strict=True)] | None = None
    listed: Annotated[bool, Field(strict=True)] = True


class Menu(_Strict):
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    products: list[Product] = Field(default_factory=list)

    # Duplicate ids are reported by the loader, at the second one's line.
    _by_id: dict[str, Product] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: Any, /) -> None:
        self._by_id = {p.id: p for p in self.products}

    def product(self, product_id: str | None) -> Product | None:
        return None if product_id is None else self._by_id.get(product_id)


__all__ = ["PRODUCT_ID", "Menu", "Product", "ProductId"]
