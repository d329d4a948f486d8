"""WebUI product logic that is not `modules.*`: options, panel, API arguments, infotext, catalog, generation
session, settings.

gradio is imported only in this subpackage.
"""
