"""Screenshots of the screens for the README (docs/kds.png, docs/operator.png), taken of the
real thing: a private broker, the daemon, two virtual printers (one of them switched off), a
few orders from a POS-like publisher, headless Chromium.

    .venv/bin/python scripts/screenshots.py [OUT_DIR]     # default: docs/
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT_DIR))

from tests.broker import Broker, free_port  # noqa: E402
from tests.browser import start_browser, wait_for  # noqa: E402
from tests.daemon import created, event  # noqa: E402
from tests.printing_env import kitchen  # noqa: E402
from tests.screens_env import write_token  # noqa: E402

STATIONS = [{"id": "grill", "printer": "hot", "categories": ["grill"]},
            {"id": "drinks", "printer": "bar", "categories": ["drinks"]}]


def item(line: str, name: str, qty: int = 1, category: str = "grill",
         **extra: object) -> dict[str, object]:
    return {"line_id": line, "name": name, "qty": qty, "category": category, **extra}


def main(out: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="kitchen-edge-shots-"))
    broker = Broker(tmp / "broker").start()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    try:
        with kitchen(tmp, broker, printers=("hot", "bar"), stations=STATIONS,
                     http={"listen": f"127.0.0.1:{port}",
                           "operator_token_file": str(write_token(tmp / "operator.token"))},
                     kds={"warn_minutes": 0.1, "late_minutes": 0.2}) as k:
            k.printers["bar"].stop()          # the bar printer is off: cards still come
            pos = k.pos
            pos.order(created("qr-7001", [
                item("l1", "Adana kebap", 2, modifiers=["no onion", "extra hot"],
                     allergens=["gluten"]),
                item("l2", "Ayran", 2, category="drinks")], display_id="A12"))
            pos.order(created("pos-88", [item("l1", "Lahmacun", 3, note="well done"),
                                         item("l2", "Köfte", 1)], display_id="88",
                              fulfillment={"type": "pickup"}))
            time.sleep(7)
            pos.order(created("web-5", [item("l1", "Adana kebap", 1), item("l2", "Pide", 1),
                                        item("l3", "Şəkərbura", 2)], display_id="W5",
                              fulfillment={"type": "delivery"}, note="no cutlery"))
            pos.order(event("web-5", "order.items_voided", {"line_ids": ["l2"]}))
            pos.order(created("pos-90", [item("l1", "İskender", 1)], display_id="90"))
            pos.order(event("pos-90", "order.held", {}))
            time.sleep(4)
            pos.order(created("pos-91", [item("l1", "Beyti", 2,
                                              modifiers=["yoghurt on the side"])],
                              display_id="91"))
            pos.order(event("pos-88", "order.items_added", {"batch_id": "b2", "items": [
                item("l3", "Adana kebap", 1)]}))
            pos.order(created("yemek-1031", [item("l1", "Adana dürüm", 2)], display_id="1031",
                              channel="marketplace", fulfillment={"type": "delivery"},
                              requires_acceptance=True))
            pos.send("kitchen/test-site/orders/x/events", b"{not json")
            driver = start_browser(tmp / "chromium")
            try:
                driver.set_window_size(1400, 900)
                driver.get(f"{base}/kds/grill")
                wait_for(lambda: len(driver.find_elements(By.CSS_SELECTOR, ".card")) >= 6, 10,
                         "the cards")
                time.sleep(1.2)
                driver.save_screenshot(str(out / "kds.png"))
                driver.get(f"{base}/")
                time.sleep(1.0)
                height = driver.execute_script("return document.body.scrollHeight")
                driver.set_window_size(1400, max(900, int(height) + 160))
                time.sleep(0.5)
                driver.save_screenshot(str(out / "operator.png"))
            finally:
                driver.quit()
    finally:
        broker.stop()
    print(f"wrote {out / 'kds.png'} and {out / 'operator.png'}")


if __name__ == "__main__":
    from selenium.webdriver.common.by import By

    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT_DIR / "docs")
