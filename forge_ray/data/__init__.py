"""The data layer: raw corpora -> prepared dataset (prepare), and the reader of that dataset.

    from forge_ray.data.dataset import open_dataset       # the reader (docs/contracts.md)
    from forge_ray.data.prepare import prepare_dataset    # the whole prepare stage
"""
