"""The prepare stage: raw corpora -> prepared dataset (Ray Data), and the reader of that dataset.

    from forge_ray.prepare.dataset import open_dataset       # the reader (docs/contracts.md)
    from forge_ray.prepare.run import prepare_dataset    # the whole prepare stage
"""
