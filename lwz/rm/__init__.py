"""The writing reward model: Bradley-Terry training (`lwz train-rm`) and its scalar-head backbone."""
