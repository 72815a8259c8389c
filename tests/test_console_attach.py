"""/attach PATH in python -m bot chat, run as a user runs it (a subprocess)."""

from __future__ import annotations

from pathlib import Path

from tests.attachment_files import decoded_image, image_parts, png, user_text
from tests.fakes.openai_server import FakeOpenAI
from tests.test_console import model_server, run_chat

__all__ = ["model_server"]  # the fixture, used by name


def test_attached_files_go_with_the_next_message(model_server: FakeOpenAI, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("Deploy on Thursday.")
    (tmp_path / "face.png").write_bytes(png(80, 60))
    lines = (
        f"/attach {tmp_path / 'notes.txt'}\n/attach {tmp_path / 'face.png'}\n"
        f"/attach {tmp_path / 'missing.txt'}\nwhat are these?\nand now?\n"
    )
    result = run_chat(model_server, tmp_path, lines)
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert out[:3] == [
        "Attached notes.txt: it goes with your next message.",
        "Attached face.png: it goes with your next message.",
        f"parley! There is no file at {tmp_path / 'missing.txt'}.",
    ]
    first, second = model_server.requests
    assert user_text(first) == (
        'what are these?\n\n<file name="notes.txt">\nDeploy on Thursday.\n</file>\n\n'
        "[image: face.png]"
    )
    assert decoded_image(image_parts(first)[0]).size == (80, 60)
    # The next message goes alone; the files stay in the history.
    assert user_text(second) == "and now?"
    assert "Deploy on Thursday." in user_text(second, 0)
