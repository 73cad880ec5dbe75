"""How the lessons are published: the student and instructor editions, the reveal.js lecture slides, and the
lesson files written for a learner without a clone. Nothing here is imported by a lesson.
"""
