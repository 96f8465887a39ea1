"""The operator page's menu panel: each product with its price, running stock and listing,
and the kitchen's actions on them (stock, 86, list, unlist), which are the `stock` command
given to the daemon's intake, as `kitchen-edge menu ...` and `{root}/commands/stock` give
it. Shown only when the station config names a menu file."""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edge.component import Intake
from edge.config.menu import Menu
from edge.orders import menu as menu_rules
from edge.store import Store
from edge.web.panels import Action, ActionRefused, Button, Form, Input, Row, Table, View


@dataclass
class MenuPanel:
    store: Store
    intake: Intake
    menu: Menu
    key: str = "menu"
    title: str = "Menu and stock"

    @property
    def actions(self) -> Mapping[str, Action]:
        return {"stock": self._stock, "86": self._86, "list": self._list,
                "unlist": self._unlist}

    def _product(self, fields: Mapping[str, str]) -> str:
        product_id = fields.get("product_id", "").strip()
        if self.menu.product(product_id) is None:
            raise ActionRefused(f"product_id: '{product_id}' is not on the menu", 400)
        return product_id

    async def _send(self, body: dict[str, Any]) -> None:
        command_id = f"web-{secrets.token_hex(6)}"
        outcome = await self.intake.command("stock", json.dumps(
            {"command_id": command_id, **body}).encode())
        if outcome.result == "dead":
            raise ActionRefused(f"stock refused: {outcome.reason}")

    async def _stock(self, fields: Mapping[str, str]) -> str:
        product_id = self._product(fields)
        text = fields.get("stock", "").strip().lower()
        if text in ("", "none", "-"):
            await self._send({"product_id": product_id, "stock": None})
            return f"{product_id}: not counted"
        if not text.isdigit() or int(text) > 100_000:
            raise ActionRefused("stock: a whole number of portions, or empty for not counted",
                                400)
        await self._send({"product_id": product_id, "stock": int(text)})
        return f"{product_id}: {int(text)} left"

    async def _86(self, fields: Mapping[str, str]) -> str:
        product_id = self._product(fields)
        await self._send({"product_id": product_id, "stock": 0})
        return f"{product_id} is 86: out until restocked"

    async def _list(self, fields: Mapping[str, str]) -> str:
        product_id = self._product(fields)
        await self._send({"product_id": product_id, "listed": True})
        return f"{product_id} is on the menu"

    async def _unlist(self, fields: Mapping[str, str]) -> str:
        product_id = self._product(fields)
        await self._send({"product_id": product_id, "listed": False})
        return f"{product_id} is off the menu"

    async def view(self) -> View:
        levels = await self.store.read(menu_rules.stock_levels)
        rows: list[Row] = []
        for product in self.menu.products:
            level = levels.get(product.id)
            stock = level.stock if level is not None else product.stock
            listed = level.listed if level is not None else product.listed
            out = level is not None and level.marked_out and stock == 0
            which = {"product_id": product.id}
            buttons = [] if out else [Button("86", "86", which,
                                             confirm=f"86 {product.name} (stock 0)?")]
            buttons.append(Button("Take off the menu", "unlist", which) if listed
                           else Button("Put back on the menu", "list", which))
            rows.append(Row([product.id, product.name, product.category,
                             f"{product.price / 100:.2f}", "-" if stock is None else str(stock),
                             "yes" if listed else "no", "86" if out else ""], buttons,
                            tone="bad" if out or not listed else
                            "warn" if stock is not None and stock <= 3 else None))
        ids = [p.id for p in self.menu.products]
        return View(
            tables=[Table(None, ["product", "name", "category", f"price ({self.menu.currency})",
                                 "stock", "listed", ""], rows, empty="the menu is empty")],
            forms=[Form("stock", "Set stock", [
                Input("product_id", "Product", "select", ids),
                Input("stock", "Portions (empty: not counted)", "number", required=False)])]
            if ids else [])


__all__ = ["MenuPanel"]
