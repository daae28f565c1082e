"""timm models from the Hugging Face Hub, by id.

    files.py        ids (timm/NAME.TAG, hf_hub:ORG/NAME@REV, local-dir:PATH) and files in the Hub's cache
    timm_model.py   a model's config, preprocessing, labels, licence, revision and weights
    timm_stages.py  its layers, from timm's group_matcher and one traced forward
    views.py        parts of a timm model that run timm's own code (the stem, the pooling)

The registry (``tl_studio.registry.get_spec``) resolves Hub ids through this package.
"""
