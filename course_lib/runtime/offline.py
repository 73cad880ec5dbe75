"""The Hub's offline switches, turned on before any Hugging Face library reads them."""
import os
import sys

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


def enable_offline_mode() -> None:
    """Set the offline variables and, if the libraries were imported first, their cached constants too."""
    for name in OFFLINE_VARIABLES:
        os.environ[name] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    datasets_config = sys.modules.get("datasets.config")
    if datasets_config is not None:
        datasets_config.HF_HUB_OFFLINE = True


def offline_mode_is_on() -> bool:
    """True when every offline variable is set and huggingface_hub agrees."""
    if not all(os.environ.get(name) == "1" for name in OFFLINE_VARIABLES):
        return False
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)
