"""The lessons whose teaching material is complete, in one place.

A lesson is listed once its notebook's author is done with it and its notes are written: speaker notes for every
``##`` section (checked in the real decks by test_slides_browser.py) and an instructor guide with a minute
budget, cuts, answer keys, misconceptions and live-coding moments (checked by test_instructor_guide.py). Every
other lesson still gets its deck and guide page, checked for everything else.
"""
LESSONS_WITH_TEACHING_NOTES = [
    "00_behind_the_pipeline",
    "01_tokenization",
    "02_attention",
    "03_encoder",
    "05_modern_decoders",
]
