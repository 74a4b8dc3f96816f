"""YIELD_TO_PREDICTIONS on the API's side: /predict requests mark predictions waiting in the broker,
at most every MARK_EVERY_SECONDS, for MARK_SECONDS; without the setting nothing is written."""

from __future__ import annotations

import asyncio

from api_support import FakeBroker, make_client

from core.predicting import MARK_SECONDS, Every, mark_key
from service.predicting import PredictingMarker

PNG_1PX = b"not a png"  # the mark comes before the upload is read: any body will do


def test_a_predict_request_marks_predictions_waiting(configure) -> None:
    settings = configure(YIELD_TO_PREDICTIONS="true")
    broker = FakeBroker()
    with make_client(broker) as client:
        client.post("/predict", files={"file": ("x.png", PNG_1PX, "image/png")})
        client.post("/predict", files={"file": ("x.png", PNG_1PX, "image/png")})  # within 0.5 s: not again
    assert broker.marks == [(mark_key(settings.JOB_QUEUE), MARK_SECONDS)]


def test_without_the_setting_no_mark(configure) -> None:
    configure(YIELD_TO_PREDICTIONS="false")
    broker = FakeBroker()
    with make_client(broker) as client:
        client.post("/predict", files={"file": ("x.png", PNG_1PX, "image/png")})
    assert broker.marks == []


def test_marks_are_written_at_most_every_interval() -> None:
    now, broker = [0.0], FakeBroker()
    marker = PredictingMarker(broker, queue="q", every=Every(0.5, clock=lambda: now[0]))

    async def requests() -> None:
        for step in range(12):  # a request every 0.1 s
            now[0] = step / 10
            marker.note()
        await asyncio.sleep(0.05)  # the writes run on the default executor

    asyncio.run(requests())
    assert len(broker.marks) == 3  # at 0.0, 0.5 and 1.0 s
