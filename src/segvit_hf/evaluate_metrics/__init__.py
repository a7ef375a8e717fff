"""`evaluate` module scripts shipped with segvit_hf; load them with `evaluate.load(<path to the script>)`."""
