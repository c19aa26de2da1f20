-- Part (e): consume one article of user 4 while restart.sql renews the subscription.
INSERT INTO public.load_restart_answers SELECT allowed FROM quota.consume(4, 'articles_per_month');
