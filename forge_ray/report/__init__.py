"""The run report: one self-contained HTML file per version (loss per domain, mixture shares,
tokens per expert, evaluation against the previous version, lineage).

    from forge_ray.report.version_report import write_version_report   # <root>/reports/<model>/<version>.html
    from forge_ray.report.render import write_report, render_report    # from explicit inputs
"""
