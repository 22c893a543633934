"""Sphinx configuration of the API reference (docs/api).

Build it from the repository root (tests/test_docs.py does, with -W)::

    python -m sphinx -W -b html docs/api docs/api/_build
"""
import os
import sys

# The checkout's package, whether or not it is installed.
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__),
                                                '..', '..')))

project = 'pyg_hma'
author = 'pyg_hma contributors'
copyright = 'pyg_hma contributors'

extensions = [
    'sphinx.ext.autodoc',
    'sphinx.ext.napoleon',
    'sphinx.ext.mathjax',
]

# The docstrings follow PyG's style: Google-style "Args:" sections with
# "name (type, optional): ... (default: ...)" entries.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_custom_sections = [('Shapes', 'params_style')]

autodoc_member_order = 'bysource'
autodoc_typehints = 'none'          # types are in the docstrings' Args
autodoc_default_options = {
    'members': True,
    'show-inheritance': True,
}
# Torch and PyG are imported for real; only what a reader needs is shown.
add_module_names = False
exclude_patterns = ['_build']
html_theme = 'alabaster'
html_static_path = []
