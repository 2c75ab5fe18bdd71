"""The conformance suite (thinkbox.sandbox.conformance), one test per behaviour, on every backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from thinkbox.errors import SandboxUnavailable
from thinkbox.sandbox import conformance
from thinkbox.sandbox.backend import SandboxBackend
from thinkbox.sandbox.bwrap.backend import BwrapBackend

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_state_persists_between_executions(sandbox_backend: SandboxBackend) -> None:
    await conformance.state_persists_between_executions(sandbox_backend)


async def test_value_of_last_expression_is_the_result(sandbox_backend: SandboxBackend) -> None:
    await conformance.value_of_last_expression_is_the_result(sandbox_backend)


async def test_stdout_streams_before_the_execution_ends(sandbox_backend: SandboxBackend) -> None:
    await conformance.stdout_streams_before_the_execution_ends(sandbox_backend)


async def test_stderr_is_separate_from_stdout(sandbox_backend: SandboxBackend) -> None:
    await conformance.stderr_is_separate_from_stdout(sandbox_backend)


async def test_exception_is_returned_as_data_and_the_session_stays_usable(
    sandbox_backend: SandboxBackend,
) -> None:
    await conformance.exception_is_returned_as_data_and_the_session_stays_usable(sandbox_backend)


async def test_interrupt_stops_the_code_and_keeps_state(sandbox_backend: SandboxBackend) -> None:
    await conformance.interrupt_stops_the_code_and_keeps_state(sandbox_backend)


async def test_timeout_interrupts_and_says_state_survived(sandbox_backend: SandboxBackend) -> None:
    await conformance.timeout_interrupts_and_says_state_survived(sandbox_backend)


async def test_timeout_kills_code_that_ignores_the_interrupt_and_says_state_was_lost(
    sandbox_backend: SandboxBackend,
) -> None:
    await conformance.timeout_kills_code_that_ignores_the_interrupt_and_says_state_was_lost(sandbox_backend)


async def test_restart_gives_a_fresh_interpreter(sandbox_backend: SandboxBackend) -> None:
    await conformance.restart_gives_a_fresh_interpreter(sandbox_backend)


async def test_cwd_is_the_workspace(sandbox_backend: SandboxBackend) -> None:
    await conformance.cwd_is_the_workspace(sandbox_backend)


async def test_start_directory_nested_mounts_and_covers(sandbox_backend: SandboxBackend) -> None:
    await conformance.start_directory_nested_mounts_and_covers(sandbox_backend)


async def test_files_round_trip_including_binary(sandbox_backend: SandboxBackend) -> None:
    await conformance.files_round_trip_including_binary(sandbox_backend)


async def test_matplotlib_figure_becomes_png_display_data(sandbox_backend: SandboxBackend) -> None:
    await conformance.matplotlib_figure_becomes_png_display_data(sandbox_backend)


async def test_repr_html_object_becomes_html_display_data(sandbox_backend: SandboxBackend) -> None:
    await conformance.repr_html_object_becomes_html_display_data(sandbox_backend)


async def test_large_output_is_cut_with_a_marker(sandbox_backend: SandboxBackend) -> None:
    await conformance.large_output_is_cut_with_a_marker(sandbox_backend)


async def test_death_is_reported_and_restart_works(sandbox_backend: SandboxBackend) -> None:
    await conformance.death_is_reported_and_restart_works(sandbox_backend)


async def test_shell_commands_run_in_the_same_sandbox(sandbox_backend: SandboxBackend) -> None:
    await conformance.shell_commands_run_in_the_same_sandbox(sandbox_backend)


async def test_memory_limit_gives_memory_error(sandbox_backend: SandboxBackend) -> None:
    await conformance.memory_limit_gives_memory_error(sandbox_backend)


async def test_file_size_limit_stops_big_files(sandbox_backend: SandboxBackend) -> None:
    await conformance.file_size_limit_stops_big_files(sandbox_backend)


async def test_workspace_fill_gives_enospc(sandbox_backend: SandboxBackend) -> None:
    await conformance.workspace_fill_gives_enospc(sandbox_backend)


async def test_no_network(sandbox_backend: SandboxBackend) -> None:
    await conformance.no_network(sandbox_backend)


async def test_every_check_of_the_suite_has_a_test_here() -> None:
    tested = {name.removeprefix("test_") for name in globals() if name.startswith("test_")}
    assert set(conformance.CHECKS) <= tested


async def test_run_sandbox_conformance_reports_results_as_data(
    sandbox_backend: SandboxBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(backend: SandboxBackend) -> None:
        conformance.expect(False, "a behaviour this backend lacks")

    monkeypatch.setitem(conformance.CHECKS, "always_fails", broken)
    results = await conformance.run_sandbox_conformance(
        sandbox_backend, only=["cwd_is_the_workspace", "always_fails"]
    )
    assert [(r.name, r.passed) for r in results] == [("cwd_is_the_workspace", True), ("always_fails", False)]
    assert results[1].detail == "a behaviour this backend lacks"
    assert results[0].duration_ms > 0


async def test_bwrap_backend_without_bubblewrap_says_how_to_install_it(tmp_path: Path) -> None:
    backend = BwrapBackend(bwrap=str(tmp_path / "no-bwrap-here"))
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        await backend.start()
