"""followup: post-procedure follow-up texts for kyphoplasty and vertebroplasty patients."""
