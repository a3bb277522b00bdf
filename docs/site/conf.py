"""Sphinx configuration of the course's website.

Built by `python3 make.py site` (hybridlib.tools.site), which copies this folder,
the executed notebooks of both editions and the results study into a source tree
and runs Sphinx on it. Nothing here reaches the network: myst-nb renders the
notebooks as executed (it does not run them), and MathJax is served from the site itself.
"""

project = "hybridlib"
author = "hybridlib"
copyright = "hybridlib authors, MIT licence"

# myst_nb: notebooks and MyST markdown; sphinx-mathjax-offline: MathJax 3, served from
# the site's _static/ folder, so formulas render with no network.
extensions = ["myst_nb", "sphinx-mathjax-offline"]

# The notebooks arrive executed by `python -m hybridlib course`: render, never run.
nb_execution_mode = "off"
nb_merge_streams = True  # one block per cell for its printed text
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3

# downloads/: the clean notebooks, linked, not pages; results/: tables the pages include
exclude_patterns = ["_build", "downloads/**", "results/**", "_course_map.md", "**/.ipynb_*"]
suppress_warnings = ["myst.header"]  # notebooks jump from "#" to "###" in places

html_theme = "sphinx_book_theme"
html_title = "hybridlib: CNNs, LSTMs and skip connections"
html_static_path = ["_static"]
html_favicon = "_static/favicon.svg"
html_last_updated_fmt = None
html_use_index = False  # a course has no index of Python objects
html_theme_options = {
    "use_download_button": True,  # each page's executed notebook, as .ipynb
    "show_toc_level": 2,
    "home_page_in_toc": True,
}
html_context = {"default_mode": "light"}  # the figures are drawn on white
