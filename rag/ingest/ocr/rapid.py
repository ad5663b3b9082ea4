"""The local OCR engine: rapidocr (PP-OCRv6 small detection and recognition, ONNX).

Its wheel carries the models; naming every model file explicitly keeps its download code
from ever running (a missing file is then an error, never a fetch). The settings are the
ones measured for this project on the handbook's pages and the PDF torture set:

* no line-orientation classifier: it turned correct long lines upside down (17% character
  errors with it, 0.015% without); whole-page orientation is ``rag.ingest.ocr.page``'s job;
* detection on the long side capped at 1,280 px: the default (short side at least 736)
  missed large isolated words and blew thin strips up to seconds of work;
* one line recognised at a time: batches of 6 peaked at 0.9-1.4 GB, one at 0.55-0.8 GB.

Arrays only, never a path or string: a string that looks like a URL is fetched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rag.ports import Image

_MODELS = {
    "Det.model_path": "PP-OCRv6_det_small.onnx",
    "Rec.model_path": "PP-OCRv6_rec_small.onnx",
    "Cls.model_path": "ch_ppocr_mobile_v2.0_cls_mobile.onnx",
}


class RapidRecogniser:
    """A ``Recogniser`` over rapidocr; load once per process (about 1-2 s)."""

    def __init__(self) -> None:
        import rapidocr
        from rapidocr import RapidOCR

        models = Path(rapidocr.__file__).parent / "models"
        params: dict[str, Any] = {key: str(models / name) for key, name in _MODELS.items()}
        params.update(
            {
                "Global.use_cls": False,
                "Global.text_score": 0.0,  # every line: ``page.read_page`` makes the cut
                "Global.log_level": "critical",
                "Det.limit_type": "max",
                "Det.limit_side_len": 1280,
                "Rec.rec_batch_num": 1,
            }
        )
        self._engine = RapidOCR(params=params)

    def recognise(self, image: Image) -> list[tuple[str, float]]:
        # rapidocr takes a 3-channel array as BGR (OpenCV's order).
        result: Any = self._engine(np.ascontiguousarray(image[:, :, ::-1]))
        texts, scores = result.txts, result.scores
        if not texts or scores is None:
            return []
        return [(str(text), float(score)) for text, score in zip(texts, scores, strict=True)]

    def warm(self) -> None:
        """Load both models now, so a broken install fails at start, not on a page.

        Recognition loads only once detection finds a line, so the page holds one.
        """
        from PIL import Image, ImageDraw

        page = Image.new("RGB", (320, 64), "white")
        ImageDraw.Draw(page).text((10, 20), "rag warms up", fill="black", font_size=24)
        self.recognise(np.asarray(page, dtype=np.uint8))
