"""The torch side of MinT: base models and PEFT adapters (the `serving` extra). The domain
core and the slim services (registry, projector, controller, router) never import it."""
