"""Speaker diarization (who spoke when) over the speech regions a job's VAD already found.

Importing this package imports neither torch nor scikit-learn: a worker loads the speaker
encoder (encoder.py) the first time a job asks for diarization (Diarizer, runner.py).
"""

from asr_service.diarize.spec import DiarizeSpec, speaker_name

__all__ = ["DiarizeSpec", "speaker_name"]
