"""The annotation app's routes, one router per concern: signing in and out, the pages, the API
the page's script calls."""
