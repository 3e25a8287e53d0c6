"""Build-time tools for entragate (policy schema, compiler, CLI). Never imported by the edge."""
