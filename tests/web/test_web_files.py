"""Files on the page: upload (button and drop), a run that reads an upload and writes a file that appears
without a reload, download, delete, the shared folder; uploads past the limit and bad names."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page, expect

from service.service_support import program

from .web_support import MAX_UPLOAD_MIB, Web, ask, sign_in


def file_row(page: Page, path: str, list_id: str = "file-list"):  # type: ignore[no-untyped-def]
    return page.get_by_test_id(list_id).locator(f'[data-testid="file"][data-path="{path}"]')


def test_an_uploaded_file_is_used_by_a_run_and_its_output_appears(web: Web, page: Page) -> None:
    sign_in(page, web.url, web.alice)
    page.get_by_test_id("file-input").set_input_files(
        files=[{"name": "sales.csv", "mimeType": "text/csv", "buffer": b"price\n10\n32\n"}]
    )
    row = file_row(page, "sales.csv")
    expect(row).to_contain_text("12 B")
    row.get_by_role("button", name="Attach sales.csv to the question").click()
    expect(page.get_by_test_id("attachment")).to_contain_text("sales.csv")
    code = (
        "import pandas as pd\ntotal = pd.read_csv('sales.csv')['price'].sum()\nprint(total)\n"
        "open('total.txt', 'w').write(str(total))"
    )
    run = ask(page, program([code], "42"))
    expect(run.get_by_test_id("step-output").first).to_contain_text("42")
    expect(page.get_by_test_id("attachment")).to_have_count(0)  # attachments go with one question
    expect(file_row(page, "total.txt")).to_be_visible()  # written by the run, shown without a reload
    run_info = web.server.service.runs.list_runs  # the attachment was sent as the run's files
    assert any(
        "sales.csv" in r.files for r in run_info(_principal(web, "alice"), limit=5, offset=0, text=None)
    )
    with page.expect_download() as download:
        file_row(page, "total.txt").get_by_role("button", name="Download total.txt").click()
    assert download.value.suggested_filename == "total.txt"
    assert Path(download.value.path()).read_text() == "42"
    file_row(page, "total.txt").get_by_role("button", name="Delete total.txt").click()
    expect(file_row(page, "total.txt")).to_have_count(0)
    assert not (web.data_dir / "storage" / "acme" / "alice" / "total.txt").exists()


def test_drop_uploads_and_the_shared_folder_is_listed_beside(web: Web, page: Page) -> None:
    shared = web.data_dir / "storage" / "acme" / "team-notes.txt"
    shared.parent.mkdir(parents=True, exist_ok=True)
    shared.write_text("for everyone at acme")
    sign_in(page, web.url, web.bob)
    expect(file_row(page, "team-notes.txt", "shared-file-list")).to_be_visible()
    page.get_by_test_id("drop-zone").evaluate(
        """zone => {
            const data = new DataTransfer();
            data.items.add(new File(["dropped"], "dropped.txt", { type: "text/plain" }));
            const drop = { dataTransfer: data, bubbles: true, cancelable: true };
            zone.dispatchEvent(new DragEvent("drop", drop));
        }"""
    )
    expect(file_row(page, "dropped.txt")).to_contain_text("7 B")
    assert (web.data_dir / "storage" / "acme" / "bob" / "dropped.txt").read_text() == "dropped"


def test_an_upload_over_the_limit_is_refused_with_the_setting_named(web: Web, page: Page) -> None:
    sign_in(page, web.url, web.alice)
    big = b"x" * (MAX_UPLOAD_MIB * 1024 * 1024 + 1)
    page.get_by_test_id("file-input").set_input_files(
        files=[{"name": "big.bin", "mimeType": "application/octet-stream", "buffer": big}]
    )
    error = page.get_by_test_id("files-error")
    expect(error).to_contain_text("big.bin")
    expect(error).to_contain_text("service.max_upload_mib")
    expect(file_row(page, "big.bin")).to_have_count(0)


def test_a_name_with_dot_dot_is_refused_and_markup_in_a_name_is_text(web: Web, page: Page) -> None:
    sign_in(page, web.url, web.alice)
    page.evaluate("localStorage.setItem('thinkbox.probe', '0')")
    page.get_by_test_id("drop-zone").evaluate(
        """zone => {
            const data = new DataTransfer();
            data.items.add(new File(["x"], "../escape.txt"));
            const name = "<img src=x onerror=\\"localStorage.setItem('thinkbox.probe','1')\\">.txt";
            data.items.add(new File(["y"], name));
            const drop = { dataTransfer: data, bubbles: true, cancelable: true };
            zone.dispatchEvent(new DragEvent("drop", drop));
        }"""
    )
    error = page.get_by_test_id("files-error")
    expect(error).to_contain_text("../escape.txt")
    expect(error).to_contain_text("climbs out with '..'")
    name = "<img src=x onerror=\"localStorage.setItem('thinkbox.probe','1')\">.txt"
    expect(page.get_by_test_id("file-list")).to_contain_text(name)
    assert page.get_by_test_id("file-list").locator("img").count() == 0
    assert page.evaluate("localStorage.getItem('thinkbox.probe')") == "0"
    assert not (web.data_dir / "storage" / "acme" / "escape.txt").exists()


def _principal(web: Web, user: str):  # type: ignore[no-untyped-def]
    from thinkbox.service import accounts

    account = getattr(web, user)
    principal = accounts.authenticate(web.db, account.key)
    assert principal is not None
    return principal
