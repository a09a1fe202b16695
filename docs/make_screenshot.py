"""The report screenshots under docs/: the top of a run's report.html as rendered by headless Chromium.

    python docs/make_screenshot.py runs/demo docs/demo-report.png
    python docs/make_screenshot.py runs/r20-demo docs/demo-report-resnet20.png --height 4200

Needs Debian's chromium and chromium-driver and selenium (the browser test's harness, tests/browser.py).
The page is rendered whole, then its top ``--height`` pixels are scaled to two thirds and reduced to a
128-colour palette, which keeps a page of text and plots to well under 200 kB.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from browser import open_page, skip_reason  # noqa: E402

from filterscope.report.html import build_report  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("output")
    parser.add_argument("--height", type=int, default=1150, help="pixels from the top of the page kept")
    args = parser.parse_args()
    if skip_reason():
        raise SystemExit(skip_reason())
    page = build_report(args.run_dir)
    with tempfile.TemporaryDirectory() as folder:
        report = open_page(page, Path(folder) / "page.png")
        if report.console_errors or report.external_requests or any(width == 0 for _, width in report.images):
            raise SystemExit(f"the page did not render cleanly: {report.console_errors} {report.external_requests}")
        image = Image.open(report.screenshot).convert("RGB")
    top = image.crop((0, 0, image.width, min(args.height, image.height)))
    top = top.resize((top.width * 2 // 3, top.height * 2 // 3), Image.LANCZOS).quantize(colors=128)
    top.save(args.output, optimize=True)
    print(f"{args.output}: {top.width}x{top.height}, {Path(args.output).stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
