"""Chat front ends and the command grammar they share. Never imports torch."""
