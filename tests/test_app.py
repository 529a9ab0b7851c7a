"""``fsar app`` through its HTTP API (Starlette's test client): actions, prediction, the limits."""

import json

import pytest
import torch

pytest.importorskip("fastapi", reason="the [app] extra (fastapi, uvicorn, python-multipart) is not installed")
pytest.importorskip("multipart", reason="the [app] extra (python-multipart) is not installed")
from app_clips import TINY_FLAGS, TINY_OPTIONS, write_clips  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from fsar.app import AppState, create_app, safe_name  # noqa: E402
from fsar.cli import main  # noqa: E402
from fsar.recognizer import Recognizer, build_recognizer_method  # noqa: E402


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return write_clips(tmp_path_factory.mktemp("clips"), clips=3)


@pytest.fixture()
def client(tmp_path):
    torch.manual_seed(0)
    method, info = build_recognizer_method(method="otam", backbone="clip-vit-b32", checkpoint=None,
                                           weights="random", method_options=TINY_OPTIONS)
    recognizer = Recognizer.from_method(method, num_frames=4, cache_dir=tmp_path / "work" / "cache",
                                        device="cpu", info=info, reject="off")
    state = AppState(recognizer, tmp_path / "work", max_upload_bytes=200_000)
    return TestClient(create_app(state)), state


def upload(paths, field="files"):
    return [(field, (p.name, p.read_bytes(), "video/mp4")) for p in paths]


def test_page_state_add_predict_and_the_picture(client, clips):
    client, state = client
    page = client.get("/")
    assert page.status_code == 200 and 'id="predict-button"' in page.text
    assert "127.0.0.1" not in page.text and "http" not in page.text.split("<script>")[1].split("fetch")[0]
    assert client.get("/api/state").json()["actions"] == {}
    for name in ("red", "green"):
        answer = client.post("/api/actions", data={"name": name}, files=upload(clips[name][:2]))
        assert answer.status_code == 200, answer.text
    assert answer.json()["actions"] == {"red": 2, "green": 2}
    assert sorted(p.name for p in (state.workdir / "actions" / "red").iterdir()) == ["clip0.mp4", "clip1.mp4"]
    result = client.post("/api/predict", files=upload([clips["green"][2]], field="file"))
    assert result.status_code == 200, result.text
    body = result.json()
    assert body["prediction"]["label"] == "green" and body["prediction"]["query"] == "clip2.mp4"
    assert body["prediction"]["label"] == state.recognizer.predict(clips["green"][2]).label
    picture = client.get(body["explanation"])
    assert picture.status_code == 200 and picture.content[:4] == b"\x89PNG"
    # add a third action from the page, then remove one; reject from the page
    client.post("/api/actions", data={"name": "blue"}, files=upload(clips["blue"][:2]))
    assert client.post("/api/reject", data={"value": "auto"}).json()["threshold"] is not None
    assert client.delete("/api/actions/red").json()["actions"] == {"green": 2, "blue": 2}
    assert client.delete("/api/actions/red").status_code == 404


def test_folder_upload_makes_one_action_per_sub_folder(client, clips):
    client, _ = client
    files = [("files", (f"mine/{name}/{p.name}", p.read_bytes(), "video/mp4")) for name in ("red", "blue")
             for p in clips[name][:2]]
    answer = client.post("/api/actions-folder", files=files)
    assert answer.status_code == 200, answer.text
    assert answer.json()["actions"] == {"red": 2, "blue": 2}


def test_bad_uploads_get_a_message_not_a_trace(client, clips, tmp_path):
    client, state = client
    assert client.post("/api/predict", files=upload([clips["red"][0]], field="file")).json()["error"].startswith(
        "add at least 2 actions")
    client.post("/api/actions", data={"name": "red"}, files=upload(clips["red"][:2]))
    client.post("/api/actions", data={"name": "green"}, files=upload(clips["green"][:2]))
    # not a video (right suffix, wrong content)
    answer = client.post("/api/predict", files=[("file", ("fake.mp4", b"not a video at all", "video/mp4"))])
    assert answer.status_code == 400 and "not a readable video" in answer.json()["error"]
    # unsupported type
    answer = client.post("/api/predict", files=[("file", ("notes.txt", b"hello", "text/plain"))])
    assert answer.status_code == 415 and "unsupported file type" in answer.json()["error"]
    # larger than the limit (200 kB here): refused from Content-Length, before parsing
    answer = client.post("/api/predict", files=[("file", ("big.mp4", b"0" * 2_000_000, "video/mp4"))])
    assert answer.status_code == 413 and "larger than the limit" in answer.json()["error"]
    # a support clip that does not decode: nothing half-added
    answer = client.post("/api/actions", data={"name": "broken"},
                         files=[("files", ("x.mp4", b"garbage", "video/mp4"))])
    assert answer.status_code == 400 and "broken" not in state.recognizer.actions
    assert not (state.workdir / "actions" / "broken").exists()
    # a path outside the working folder
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    for path in (str(outside), "../elsewhere", "actions/../../elsewhere"):
        answer = client.post("/api/support-folder", data={"path": path})
        assert answer.status_code == 403 and "outside the working folder" in answer.json()["error"], path
    # uploaded names cannot escape either
    answer = client.post("/api/actions", data={"name": "../../evil"},
                         files=[("files", ("../../../evil.mp4", clips["blue"][0].read_bytes(), "video/mp4"))])
    assert answer.status_code == 200
    assert (state.workdir / "actions" / "evil" / "evil.mp4").is_file()
    assert not list(tmp_path.glob("evil*"))
    for name in ("..%2F..%2Fsecret.png", "0" * 32 + ".txt", "nothere.png"):
        assert client.get(f"/explanations/{name}").status_code == 404
    # missing fields: a sentence, not a validation dump
    answer = client.post("/api/actions", data={"name": "nothing"})
    assert answer.status_code == 400 and answer.json()["error"] == "choose at least one clip"
    # a support folder with an empty action, inside the working folder
    two = state.workdir / "two"
    (two / "red").mkdir(parents=True)
    (two / "red" / "a.mp4").write_bytes(clips["red"][0].read_bytes())
    (two / "nothing here").mkdir()
    answer = client.post("/api/support-folder", data={"path": "two"})
    assert answer.status_code == 400 and "hold no readable clip" in answer.json()["error"]
    # a support folder with one action, inside the working folder
    one = state.workdir / "one" / "only"
    one.mkdir(parents=True)
    one.joinpath("a.mp4").write_bytes(clips["red"][0].read_bytes())
    answer = client.post("/api/support-folder", data={"path": "one"})
    assert answer.status_code == 400 and "at least 2 action folders" in answer.json()["error"]


def test_safe_name():
    assert safe_name("../../x y.mp4", what="f") == "x y.mp4"
    assert safe_name("a/b\\c", what="f") == "c"
    for bad in ("..", "", "/", " . "):
        with pytest.raises(Exception):
            safe_name(bad, what="f")


def test_cli_refuses_bad_starts(tmp_path, clips, capsys):
    one = tmp_path / "one"
    (one / "red").mkdir(parents=True)
    (one / "red" / "a.mp4").write_bytes(clips["red"][0].read_bytes())
    assert main(["app", "--data", str(one), "--workdir", str(tmp_path / "w"), *TINY_FLAGS]) == 2
    assert "at least 2 action folders" in capsys.readouterr().err
    (one / "empty").mkdir()
    assert main(["app", "--data", str(one), "--workdir", str(tmp_path / "w"), *TINY_FLAGS]) == 2
    assert "hold no readable clip" in capsys.readouterr().err
    assert main(["app", "--workdir", str(tmp_path / "w"), "--max-upload-mb", "0", *TINY_FLAGS]) == 2
    assert "--max-upload-mb" in capsys.readouterr().err
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.json").write_text(json.dumps({"format": "nope"}))
    assert main(["app", "--workdir", str(tmp_path / "w"), "--checkpoint", str(run)]) == 2
    assert "not an fsar checkpoint" in capsys.readouterr().err


def test_demo_button_loads_the_synthetic_actions(client):
    client, state = client
    answer = client.post("/api/demo")
    assert answer.status_code == 200, answer.text
    from fsar.data.synth import class_names

    assert answer.json()["actions"] == {name: 3 for name in class_names()[:5]}
    assert all(p.is_relative_to(state.workdir) for name in state.recognizer.actions
               for p in state.recognizer.support_paths(name))
