"""The lessons whose teaching material is complete, in one place.

A lesson is listed once its notes are written: a speaker-notes cell for every ``##`` section (checked in the real
decks by test_slides_browser.py). Every lesson has its instructor guide (minute budget, cuts, answer keys,
misconceptions, live-coding moments), checked for all of them by test_instructor_guide.py; a lesson not listed
here still gets its deck, checked for everything else.
"""
LESSONS_WITH_TEACHING_NOTES = [
    "00_behind_the_pipeline",
    "01_tokenization",
    "02_attention",
    "03_encoder",
    "04_masking_and_decoders",
    "05_modern_decoders",
    "06_features_and_umap",
    "07_fine_tuning",
    "08_fine_tuning_at_scale",
]
