"""The remote backend (runtime/remote.py) against a fake KServe-v2 server in a thread: same detections
as the local IR, and one ServerError line for every way a server can fail."""

from __future__ import annotations

import numpy as np
import pytest

from d2ov_core.errors import InputError, ServerError
from d2ov_core.runtime import remote
from d2ov_core.runtime import settings as S
from d2ov_core.runtime.ir import read_metadata
from d2ov_core.runtime.predictor import Predictor

from ..conftest import ROOT, SAMPLES
from ..fake_v2 import FakeV2Server, closed_port_url

XML = ROOT / "d2ov_core" / "data" / "ir" / "demo__mask_rcnn_shapes" / "FP16" / "model.xml"
SAMPLE = sorted(SAMPLES.glob("shapes_*.jpg"))[0]


@pytest.fixture(scope="module")
def fake():
    with FakeV2Server(XML, "mask") as srv:
        yield srv


@pytest.fixture(autouse=True)
def _reset(fake):
    fake.mode, fake.delay = "ok", 5.0
    yield


@pytest.fixture(scope="module")
def local():
    return Predictor(XML)


@pytest.mark.parametrize("mode", ["ok", "json"])
def test_remote_predictor_equals_local(fake, local, mode):
    fake.mode = mode  # binary outputs, or plain JSON data
    rem = Predictor(server=fake.url, model="mask", timeout=10)
    for image in sorted(SAMPLES.glob("shapes_*.jpg")):
        a, b = local.predict(image, threshold=0.0), rem.predict(image, threshold=0.0)
        assert len(a) == len(b) > 0
        np.testing.assert_allclose(b.boxes, a.boxes, atol=1e-3)
        assert list(b.labels) == list(a.labels)
        assert np.array_equal(b.masks, a.masks)
    assert rem.metadata == read_metadata(XML)
    assert rem.describe()["ir"] == f"{fake.url}/v2/models/mask" and rem.device == fake.url


def test_the_only_model_is_found_and_many_images_stream_in_order(fake, local):
    rem = Predictor(server=fake.url + "/")  # no model named: the server's only one; trailing slash ok
    images = sorted(SAMPLES.glob("shapes_*.jpg"))
    got = [det for _, det in rem.predict_many(images, threshold=0.0, jobs=3)]
    for image, det in zip(images, got):
        assert len(det) == len(local.predict(image, threshold=0.0))


@pytest.mark.parametrize(
    "mode, message",
    [
        ("wrong_shape", ", 3]; a d2ov model returns FP32 [N, 4]"),
        ("wrong_dtype", "output 'boxes' of 'mask' is INT64"),
        ("missing", "returned no output 'scores'"),
        ("error", "failed with HTTP 500: fake: inference failed on purpose"),
        ("garbage", "the inference answer is not JSON"),
    ],
)
def test_a_bad_answer_is_one_line(fake, mode, message):
    rem = Predictor(server=fake.url, model="mask", timeout=10)
    fake.mode = mode
    with pytest.raises(ServerError) as e:
        rem.predict(SAMPLE)
    assert "\n" not in str(e.value) and str(e.value).startswith(f"model server {fake.url}")
    assert message in str(e.value), str(e.value)


def test_a_slow_server_times_out_in_one_line(fake):
    rem = Predictor(server=fake.url, model="mask", timeout=0.5)
    fake.mode, fake.delay = "slow", 3.0
    with pytest.raises(ServerError, match=r"did not answer inference on 'mask' within 0.5 s"):
        rem.predict(SAMPLE)


def test_a_server_that_is_down_is_one_line():
    url = closed_port_url()
    with pytest.raises(ServerError, match=r"is unreachable \(Connection refused\)"):
        Predictor(server=url, model="mask", timeout=2)


def test_a_model_without_d2ov_metadata_or_unknown_is_refused(fake):
    fake.mode = "no_rt_info"
    with pytest.raises(ServerError, match="'mask' is not a d2ov model .*no rt_info model_info"):
        Predictor(server=fake.url, model="mask")
    fake.mode = "ok"
    with pytest.raises(ServerError, match=r"has no model 'other' \(it serves: mask\)"):
        Predictor(server=fake.url, model="other")


@pytest.mark.parametrize("url", ["localhost:8080", "ftp://host", "", None])
def test_server_url_must_be_http(url):
    with pytest.raises(InputError, match="http"):
        remote.check_server_url(url)


def test_remote_predictor_takes_no_local_options(fake):
    with pytest.raises(InputError):
        Predictor(XML, server=fake.url)
    with pytest.raises(InputError):
        Predictor()


def test_decode_all_fills_defaults_and_names_what_is_missing():
    meta = read_metadata(XML)
    texts = {k: S.encode(k, v) for k, v in meta.to_dict().items()}
    assert S.decode_all(texts) == meta
    optional = {k: v for k, v in texts.items() if k != "accuracy"}
    assert S.decode_all(optional).accuracy == {}
    with pytest.raises(KeyError, match="labels"):
        S.decode_all({k: v for k, v in texts.items() if k != "labels"})
    with pytest.raises(ValueError, match="min_size"):
        S.decode_all({**texts, "min_size": "not json"})
