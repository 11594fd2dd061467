"""Query mode: attribute the user's own images with a trained model (`+query=folder`):
`inputs` reads them, `run` scores them through the stage graph, `output` writes the table
and figures."""
