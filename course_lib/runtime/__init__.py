"""What makes the course run, not what it teaches: the offline switch, the caches of de-quantized and fine-tuned
models, ``doctor`` and ``prepare``, installing the asset packages and lessons without a clone, the course's
errors, and the ``course-lib`` command line. Lessons reach it through :mod:`course_lib.assets`,
:mod:`course_lib.data`, :mod:`course_lib.settings` and :mod:`course_lib.sentiment`.
"""
