"""The screens: the kitchen display and the operator page (CONTRACT section 12)."""
